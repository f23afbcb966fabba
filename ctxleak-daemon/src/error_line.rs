//! Errors as one line for people: the error and its causes, each said once.

use std::fmt;

/// Displays an error and its chain of causes joined by ": ", leaving out a cause whose text
/// the line already holds. Our errors name their cause in their own message (so that
/// `{error}` alone reads well in logs), which anyhow's `{:#}` would print a second time.
pub struct ErrorLine<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let text = error.to_string();
            if !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            cause = error.source();
        }
        f.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("PID {pid}: {source}")]
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
