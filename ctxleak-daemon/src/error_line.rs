//! Errors as one line for people: the error and its causes, joined by ": ".
//!
//! ctxleak's errors say their own part and leave their cause to `source()` (never both), so
//! the chain reads as one sentence from the outermost context to the root cause: print errors
//! with [`ErrorLine`] (or anyhow's `{:#}`), not with `{}`, which shows the outermost part only.

use std::fmt;

/// Displays an error and its chain of causes joined by ": ".
pub struct ErrorLine<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("PID {pid}")]
    struct Outer {
        pid: u32,
        source: Inner,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("/bin/sh is not a Go program")]
    struct Inner;

    #[test]
    fn each_cause_once() {
        let error = anyhow::Error::new(Outer {
            pid: 7,
            source: Inner,
        });
        assert_eq!(
            ErrorLine(error.as_ref()).to_string(),
            "PID 7: /bin/sh is not a Go program"
        );
        let error = error.context("cannot attach");
        assert_eq!(
            ErrorLine(error.as_ref()).to_string(),
            "cannot attach: PID 7: /bin/sh is not a Go program"
        );
    }
}
