//! `uprobe_multi` links (Linux 6.6+): one link per program and executable, however many
//! places it probes, and above all a removal that takes every breakpoint out at once.
//!
//! Why: a perf-event uprobe (what aya 0.14 attaches) is removed under the kernel's global
//! `event_mutex`, with an RCU grace period each (`perf_uprobe_destroy` ->
//! `tracepoint_synchronize_unregister`), so an executable's probes go one after another, about
//! 0.1 s apart, threads or not. Meanwhile the program is already detached (the bpf link went
//! first) but the breakpoints still trap: on the churn bench a budget window's six probes took
//! 0.64 s to go, and the target paid about 1 µs a hit for traps no event counted, several times
//! the budget. A `uprobe_multi` link's release unregisters all its uprobes first and waits
//! once; its program sees every hit until its breakpoint is gone, so the budget counts them.
//!
//! aya 0.14 cannot make these links (its loader has no `uprobe.multi` programs; upstream added
//! them later), and the kernel takes them only for programs *loaded* with the expected attach
//! type `BPF_TRACE_UPROBE_MULTI`. So the same uprobe programs are loaded a second time here:
//! the object is parsed and relocated with `aya-obj` (aya's own parser) against the maps aya
//! already created, and loaded and linked by two `bpf(2)` calls whose attributes are written
//! out below from `include/uapi/linux/bpf.h` (the bindgen names of `aya-obj`'s generated
//! union members change between its releases; the kernel's layout does not). Where any of it
//! fails (an older kernel, a verifier that says no), ctxleak keeps aya's perf-event links.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::path::Path;

/// `BPF_PROG_TYPE_KPROBE`: uprobes are kprobe programs.
const BPF_PROG_TYPE_KPROBE: u32 = 2;
/// `BPF_TRACE_UPROBE_MULTI` of `enum bpf_attach_type`.
const BPF_TRACE_UPROBE_MULTI: u32 = 48;
/// `bpf(2)` commands.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;

/// The head of `union bpf_attr` as `BPF_PROG_LOAD` reads it, up to `expected_attach_type`
/// (the kernel zero-fills what a shorter attribute leaves out).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` as `BPF_LINK_CREATE` reads it for `BPF_TRACE_UPROBE_MULTI`.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    path: u64,
    offsets: u64,
    ref_ctr_offsets: u64,
    cookies: u64,
    cnt: u32,
    multi_flags: u32,
    pid: u32,
    _pad: u32,
}

/// `union bpf_attr` as `BPF_OBJ_GET_INFO_BY_FD` reads it.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `bpf(2)`: the new file descriptor (or 0) the kernel returned, or its error.
///
/// # Safety
/// `attr` must be the attribute the kernel expects for `cmd`, every pointer in it valid for
/// what the kernel reads or writes through it during the call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    let size = u32::try_from(size_of::<T>()).unwrap_or(u32::MAX);
    // SAFETY: as the caller promises; `attr` is valid for `size` bytes.
    let result = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size) };
    if result < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// Takes ownership of a file descriptor `bpf(2)` returned.
fn owned(fd: i64) -> std::io::Result<OwnedFd> {
    let fd = RawFd::try_from(fd).map_err(|_| std::io::Error::other(format!("bpf(2) said {fd}")))?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The uprobe programs loaded for `uprobe_multi` links.
pub struct MultiPrograms {
    programs: HashMap<&'static str, OwnedFd>,
}

impl MultiPrograms {
    /// Loads `names` from the eBPF object `object`, its maps relocated to `maps` (each map's
    /// name and a descriptor of the map aya created for it). Fails if the kernel has no
    /// `uprobe_multi` or refuses a program: the caller keeps perf-event links then.
    pub fn load(
        object: &[u8],
        maps: &[(String, OwnedFd)],
        names: &[&'static str],
    ) -> anyhow::Result<Self> {
        let mut obj = aya_obj::Object::parse(object)?;
        let text_sections: HashSet<usize> = obj.functions.keys().map(|(index, _)| *index).collect();
        let definitions = obj.maps.clone();
        let by_name: Vec<(&str, RawFd, &aya_obj::Map)> = maps
            .iter()
            .filter_map(|(name, fd)| {
                definitions
                    .get(name)
                    .map(|definition| (name.as_str(), fd.as_raw_fd(), definition))
            })
            .collect();
        obj.relocate_maps(by_name.into_iter(), &text_sections)?;
        obj.relocate_calls(&text_sections)?;
        let license = obj.license.clone();
        let mut programs = HashMap::new();
        for &name in names {
            let program = obj
                .programs
                .get(name)
                .ok_or_else(|| anyhow::anyhow!("the eBPF object has no program {name}"))?;
            let function = obj
                .functions
                .get(&program.function_key())
                .ok_or_else(|| anyhow::anyhow!("the eBPF object has no code for {name}"))?;
            let fd = load_program(name, &function.instructions, &license)
                .map_err(|error| anyhow::anyhow!("loading {name} for uprobe_multi: {error}"))?;
            programs.insert(name, fd);
        }
        Ok(Self { programs })
    }

    /// Links `program` at `offsets` of the file at `path`, in every process running it (`pid`
    /// None) or in `pid` alone. Dropping the descriptor removes every breakpoint of the link.
    pub fn attach(
        &self,
        program: &str,
        path: &Path,
        offsets: &[u64],
        pid: Option<u32>,
    ) -> std::io::Result<OwnedFd> {
        let fd = self
            .programs
            .get(program)
            .ok_or_else(|| std::io::Error::other(format!("{program} not loaded")))?;
        let path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| std::io::Error::other("a path with a NUL byte"))?;
        let mut attr = LinkCreateAttr {
            prog_fd: u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX),
            attach_type: BPF_TRACE_UPROBE_MULTI,
            path: path.as_ptr() as u64,
            offsets: offsets.as_ptr() as u64,
            cnt: u32::try_from(offsets.len()).unwrap_or(u32::MAX),
            pid: pid.unwrap_or(0),
            ..LinkCreateAttr::default()
        };
        // SAFETY: a BPF_LINK_CREATE attribute; `path` and `offsets` outlive the call and hold
        // what `cnt` says.
        owned(unsafe { bpf(BPF_LINK_CREATE, &mut attr) }?)
    }

    /// Runs and run time of `program` (with the kernel's run statistics on), as the kernel
    /// counts them: `bpf_prog_info`'s `run_cnt` and `run_time_ns`.
    pub fn runs(&self, program: &str) -> Option<(u64, std::time::Duration)> {
        let fd = self.programs.get(program)?;
        // SAFETY: bpf_prog_info is plain integers and addresses: all zeroes is a valid value
        // (and the one the kernel asks for in the fields it does not fill).
        let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
        let mut attr = InfoAttr {
            bpf_fd: u32::try_from(fd.as_raw_fd()).ok()?,
            info_len: u32::try_from(size_of_val(&info)).ok()?,
            info: std::ptr::from_mut(&mut info) as u64,
        };
        // SAFETY: a BPF_OBJ_GET_INFO_BY_FD attribute pointing at a bpf_prog_info of the
        // length it says, alive for the call.
        unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }.ok()?;
        Some((
            info.run_cnt,
            std::time::Duration::from_nanos(info.run_time_ns),
        ))
    }
}

/// `BPF_PROG_LOAD` of one program with the expected attach type `BPF_TRACE_UPROBE_MULTI`;
/// the verifier's log on refusal.
fn load_program(
    name: &str,
    instructions: &[aya_obj::generated::bpf_insn],
    license: &CString,
) -> std::io::Result<OwnedFd> {
    let mut prog_name = [0u8; 16];
    for (to, from) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *to = from;
    }
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_KPROBE,
        insn_cnt: u32::try_from(instructions.len()).unwrap_or(u32::MAX),
        insns: instructions.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        expected_attach_type: BPF_TRACE_UPROBE_MULTI,
        ..ProgLoadAttr::default()
    };
    // SAFETY: a BPF_PROG_LOAD attribute; the instructions and license outlive the call.
    match unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
        Ok(fd) => owned(fd),
        Err(error) => {
            // Again with the verifier's log, to say why.
            attr.log_level = 1;
            attr.log_size = u32::try_from(log.len()).unwrap_or(u32::MAX);
            attr.log_buf = log.as_mut_ptr() as u64;
            // SAFETY: as above, and `log` is valid for `log_size` bytes.
            let _ = unsafe { bpf(BPF_PROG_LOAD, &mut attr) };
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let last = text.lines().rev().find(|line| !line.trim().is_empty());
            Err(std::io::Error::new(
                error.kind(),
                format!(
                    "{error}{}",
                    last.map(|l| format!(": {l}")).unwrap_or_default()
                ),
            ))
        }
    }
}
