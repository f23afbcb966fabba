//! Program counters to source positions, inlined calls included, from `.gopclntab` alone (so
//! it works on stripped binaries). It follows the runtime's own `inlineUnwinder`
//! (`runtime/symtabinl.go`) and `funcline1` (`runtime/symtab.go`), so its frames are those of
//! `runtime.CallersFrames` and of Go's tracebacks.
//!
//! `go tool addr2line` prints, for one PC, the physical function's name with the file and
//! line of the innermost inlined call: that is `frames.last().function` with
//! `frames[0].file` and `frames[0].line` here.

use std::borrow::Cow;

use super::pclntab::{FuncId, Function, Pclntab};

/// One level of the call stack at a PC.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    /// The function as the linker named it (`main.sum[go.shape.int]` for a generic function;
    /// [`name_for_print`] gives the runtime's `main.sum[...]`).
    pub function: String,
    /// The source file, `"?"` when the table has no position for the PC (the runtime's
    /// answer too), as for the padding between functions.
    pub file: String,
    /// The line, 0 when unknown.
    pub line: u32,
    /// Whether the compiler inlined this call into its caller (every frame but the last).
    pub inlined: bool,
    /// The function's `abi.FuncID`. The runtime leaves frames of wrappers
    /// ([`Pclntab::wrapper_func_id`], such as `main.main.gowrap1` that starts a goroutine
    /// since Go 1.22) out of `runtime.Callers` and tracebacks; this symbolizer keeps them.
    pub func_id: FuncId,
}

/// Bound on the inline depth followed, against cycles in a malformed inline tree. The
/// compiler's inlining budget keeps real chains far shorter.
const MAX_INLINE_DEPTH: usize = 1024;

/// The frames at `pc` (a link-time address: subtract the load bias of a PIE process first),
/// innermost first; the last one is the physical function. None when no function contains
/// `pc`. `pc` is taken as the address of an instruction: for a return address (a caller's
/// frame in a stack, `g.gopc`) use [`symbolize_return_address`].
pub fn symbolize(pclntab: &Pclntab, pc: u64) -> Option<Vec<Frame>> {
    let function = pclntab.function_at(pc)?;
    Some(frames_in(&function, pc))
}

/// The frames of the call that returns to `pc`: the runtime's rule for caller frames (and for
/// a goroutine's creation site, `g.gopc`) is to look up `pc - 1` unless `pc` is the entry.
pub fn symbolize_return_address(pclntab: &Pclntab, pc: u64) -> Option<Vec<Frame>> {
    let function = pclntab.function_at(pc)?;
    let pc = if pc > function.entry { pc - 1 } else { pc };
    Some(frames_in(&function, pc))
}

/// The frames at `pc` within `function` (`runtime.newInlineUnwinder` and its `next`).
pub fn frames_in(function: &Function<'_>, pc: u64) -> Vec<Frame> {
    let position = |pc: u64| match function.file_line(pc) {
        Some((file, line)) => (file.into_owned(), line),
        None => ("?".to_owned(), 0),
    };
    let mut frames = Vec::new();
    let mut pc = pc;
    // An index that cannot be read ends the walk at the physical function, as the runtime's
    // non-strict lookup does ("If things go really wrong, it'll just fall back to the
    // outermost frame").
    let mut index = function.inline_index(pc);
    while let Some(call) = index.and_then(|index| function.inlined_call(index)) {
        if frames.len() >= MAX_INLINE_DEPTH {
            break;
        }
        let (file, line) = position(pc);
        frames.push(Frame {
            function: call.name.into_owned(),
            file,
            line,
            inlined: true,
            func_id: call.func_id,
        });
        let Some(parent) = u64::try_from(call.parent_pc)
            .ok()
            .and_then(|off| function.entry.checked_add(off))
        else {
            break;
        };
        pc = parent;
        index = function.inline_index(pc);
    }
    let (file, line) = position(pc);
    frames.push(Frame {
        function: function.name.clone().into_owned(),
        file,
        line,
        inlined: false,
        func_id: function.func_id,
    });
    frames
}

/// The name as Go's tracebacks and `runtime.Frame.Function` show it: the type arguments of a
/// generic function (`main.sum[go.shape.int]`) become `[...]` (`runtime.funcNameForPrint`,
/// as of Go 1.27, which also handles generic methods of generic types).
pub fn name_for_print(name: &str) -> Cow<'_, str> {
    let Some(i) = name.find('[') else {
        return Cow::Borrowed(name);
    };
    let Some(j) = name.rfind(']') else {
        return Cow::Borrowed(name);
    };
    if j <= i {
        return Cow::Borrowed(name);
    }
    let interior = &name[i + 1..j];
    if !interior.contains('[') {
        return Cow::Owned(format!("{}[...]{}", &name[..i], &name[j + 1..]));
    }
    // A generic method of a generic type: "T[...]" ... "]M[" ... "]": find the "][" at depth 0.
    let mut depth = 1i32;
    let (mut rbr, mut lbr) = (None, None);
    for (k, c) in interior.char_indices() {
        match c {
            '[' => {
                depth += 1;
                if depth == 1 {
                    lbr = Some(k);
                    break;
                }
            }
            ']' => {
                depth -= 1;
                if depth < 0 {
                    break;
                }
                if depth == 0 {
                    rbr = Some(k);
                }
            }
            _ => {}
        }
    }
    if depth == 1 {
        match (rbr, lbr) {
            (Some(r), Some(l)) if l > r => {
                return Cow::Owned(format!(
                    "{}[...]{}[...]{}",
                    &name[..i],
                    &interior[r + 1..l],
                    &name[j + 1..]
                ));
            }
            (None, None) => return Cow::Owned(format!("{}[...]{}", &name[..i], &name[j + 1..])),
            _ => {}
        }
    }
    Cow::Borrowed(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_names_like_the_runtime() {
        assert_eq!(name_for_print("main.main"), "main.main");
        assert_eq!(name_for_print("main.sum[go.shape.int]"), "main.sum[...]");
        assert_eq!(
            name_for_print("main.sortedKeys[go.shape.string,go.shape.int].func1"),
            "main.sortedKeys[...].func1"
        );
        assert_eq!(name_for_print("main.f[[]int]"), "main.f[...]");
        assert_eq!(
            name_for_print("main.(*List[go.shape.int]).Map[go.shape.string]"),
            "main.(*List[...]).Map[...]"
        );
        assert_eq!(name_for_print("a]b[c"), "a]b[c");
        assert_eq!(name_for_print("main.f[x"), "main.f[x");
    }
}
