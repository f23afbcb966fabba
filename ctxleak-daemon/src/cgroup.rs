//! Which container and Kubernetes pod a process runs in, from its `/proc/PID/cgroup`.
//!
//! Container runtimes name the cgroup of each container after its 64-hex-digit ID, and the
//! kubelet names each pod's cgroup after the pod's UID, so both can be read from the path
//! without asking the runtime or the API server. Pure parsing: nothing here fails on an
//! unknown layout, it only finds no ID.

use std::io;

/// Where a process sits in the cgroup tree, and what that says about its container and pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The cgroup path (see [`parse`] for which hierarchy's), e.g.
    /// `/system.slice/docker-<id>.scope`; `/` when the process is at the root.
    pub cgroup: String,
    /// The container's 64-hex-digit ID (lowercase) as docker, containerd, CRI-O and podman
    /// show it; `None` for processes outside containers.
    pub container_id: Option<String>,
    /// The Kubernetes pod's UID as the API shows it (`1a2b3c4d-5e6f-...`, lowercase); for a
    /// static pod, the 32-hex-digit config hash the kubelet uses as its UID.
    pub pod_uid: Option<String>,
}

/// Hierarchies consulted, best first: the cgroup v2 (unified) one, then the cgroup v1 ones
/// that every process is in and that systemd and container runtimes always populate.
const PREFERENCE: [&str; 4] = ["", "name=systemd", "pids", "memory"];

/// Reads the text of `/proc/PID/cgroup` (lines `ID:CONTROLLERS:PATH`).
///
/// `cgroup` is the path of the first hierarchy in this order whose path is not the root `/`:
/// the cgroup v2 line (`0::/path`), then the v1 `name=systemd`, `pids` and `memory` lines.
/// On a pure v2 host that is the v2 line; on a v1 or hybrid host, where the v2 line is often
/// just `/`, the systemd hierarchy mirrors the unit layout and `pids`/`memory` are where
/// runtimes without systemd (cgroupfs drivers) put containers. If every path is `/`, `/`.
///
/// The container ID and pod UID are looked for in that path first, then in the other
/// hierarchies' paths in the same order (a hybrid host can place a container in v1 only).
pub fn parse(proc_pid_cgroup: &str) -> ContainerInfo {
    let mut paths: Vec<(usize, &str)> = Vec::new();
    let mut first_line_path = None;
    for line in proc_pid_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        first_line_path.get_or_insert(path);
        let rank = controllers
            .split(',')
            .filter_map(|controller| PREFERENCE.iter().position(|p| *p == controller))
            .min();
        if let Some(rank) = rank {
            paths.push((rank, path));
        }
    }
    paths.sort_by_key(|(rank, _)| *rank);
    let ordered: Vec<&str> = paths.iter().map(|(_, path)| *path).collect();

    let cgroup = ordered
        .iter()
        .copied()
        .find(|path| *path != "/")
        .or(ordered.first().copied())
        .or(first_line_path)
        .unwrap_or("/");
    let search = std::iter::once(cgroup).chain(ordered.iter().copied());
    let mut info = ContainerInfo {
        cgroup: cgroup.to_owned(),
        ..ContainerInfo::default()
    };
    for path in search {
        if info.container_id.is_none() {
            info.container_id = container_id(path);
        }
        if info.pod_uid.is_none() {
            info.pod_uid = pod_uid(path);
        }
    }
    info
}

/// Reads and parses `/proc/PID/cgroup`.
pub fn read(pid: u32) -> io::Result<ContainerInfo> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    Ok(parse(&text))
}

/// Unit-name prefixes of container cgroups, before the ID. The conmon monitors of CRI-O and
/// podman (`crio-conmon-<id>.scope`, `libpod-conmon-<id>.scope`) carry the container's ID but
/// are not the container, so they are not listed and are skipped explicitly.
const RUNTIME_PREFIXES: [&str; 6] = [
    "docker-",         // docker with the systemd cgroup driver
    "cri-containerd-", // containerd's CRI plugin, systemd driver
    "crio-",           // CRI-O, systemd driver
    "libpod-payload-", // podman, the container's own cgroup under a split one
    "libpod-",         // podman
    "containerd-",     // containerd without CRI (nerdctl), systemd driver
];

/// The container ID in the last component of `path` that has one. Walking from the end
/// handles cgroups nested inside a container (systemd running in it: `.../init.scope`,
/// `.../system.slice/foo.service`) and containers nested in containers (the innermost wins).
fn container_id(path: &str) -> Option<String> {
    path.rsplit('/').find_map(|component| {
        let name = component.strip_suffix(".scope").unwrap_or(component);
        if name.starts_with("crio-conmon-") || name.starts_with("libpod-conmon-") {
            return None;
        }
        let id = RUNTIME_PREFIXES
            .iter()
            .find_map(|prefix| name.strip_prefix(prefix))
            .unwrap_or(name);
        is_hex(id, 64).then(|| id.to_ascii_lowercase())
    })
}

/// The pod UID in a component `pod<uid>` (cgroupfs driver) or `kubepods[-<qos>]-pod<uid>.slice`
/// (systemd driver, which writes the UID's dashes as underscores).
fn pod_uid(path: &str) -> Option<String> {
    path.rsplit('/').find_map(|component| {
        let name = component.strip_suffix(".slice").unwrap_or(component);
        let uid = if name.starts_with("kubepods") {
            name.rsplit_once("-pod")?.1
        } else {
            name.strip_prefix("pod")?
        };
        let uid = uid.replace('_', "-").to_ascii_lowercase();
        (is_uuid(&uid) || is_hex(&uid, 32)).then_some(uid)
    })
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `8-4-4-4-12` hex digits.
fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| is_hex(group, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4c5e2a9b8d7c6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e";
    const POD: &str = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";

    fn v2(path: &str) -> ContainerInfo {
        parse(&format!("0::{path}\n"))
    }

    #[test]
    fn docker_systemd_driver() {
        let info = v2(&format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(info.cgroup, format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.pod_uid, None);
    }

    #[test]
    fn docker_cgroupfs_driver() {
        let info = v2(&format!("/docker/{ID}"));
        assert_eq!(info.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn docker_nested_with_systemd_inside() {
        let info = v2(&format!("/system.slice/docker-{ID}.scope/init.scope"));
        assert_eq!(info.container_id.as_deref(), Some(ID));
        let info = v2(&format!(
            "/system.slice/docker-{ID}.scope/system.slice/nginx.service"
        ));
        assert_eq!(info.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn docker_in_docker_innermost_wins() {
        let outer = "a".repeat(64);
        let info = v2(&format!("/docker/{outer}/docker/{ID}"));
        assert_eq!(info.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn kubernetes_containerd_systemd_driver() {
        let pod = POD.replace('-', "_");
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod}.slice/cri-containerd-{ID}.scope"
        );
        let info = v2(&path);
        assert_eq!(info.cgroup, path);
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.pod_uid.as_deref(), Some(POD));
    }

    #[test]
    fn kubernetes_guaranteed_qos() {
        let pod = POD.replace('-', "_");
        let info = v2(&format!(
            "/kubepods.slice/kubepods-pod{pod}.slice/cri-containerd-{ID}.scope"
        ));
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.pod_uid.as_deref(), Some(POD));
        let info = v2(&format!("/kubepods/pod{POD}/{ID}"));
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.pod_uid.as_deref(), Some(POD));
    }

    #[test]
    fn kubernetes_cgroupfs_driver() {
        let info = v2(&format!("/kubepods/burstable/pod{POD}/{ID}"));
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.pod_uid.as_deref(), Some(POD));
        let info = v2(&format!(
            "/kubepods/besteffort/pod{}/{ID}",
            POD.to_uppercase()
        ));
        assert_eq!(info.pod_uid.as_deref(), Some(POD));
    }

    #[test]
    fn kubernetes_static_pod_hash() {
        let hash = "6b2b0e1a2f3c4d5e6f7a8b9c0d1e2f3a";
        let info = v2(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{hash}.slice/cri-containerd-{ID}.scope"
        ));
        assert_eq!(info.pod_uid.as_deref(), Some(hash));
    }

    #[test]
    fn pod_sandbox_slice_without_container() {
        let pod = POD.replace('-', "_");
        let info = v2(&format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{pod}.slice"
        ));
        assert_eq!(info.container_id, None);
        assert_eq!(info.pod_uid.as_deref(), Some(POD));
    }

    #[test]
    fn crio() {
        let pod = POD.replace('-', "_");
        let info = v2(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod}.slice/crio-{ID}.scope"
        ));
        assert_eq!(info.container_id.as_deref(), Some(ID));
        assert_eq!(info.pod_uid.as_deref(), Some(POD));
    }

    #[test]
    fn crio_conmon_is_not_the_container() {
        let pod = POD.replace('-', "_");
        let info = v2(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod}.slice/crio-conmon-{ID}.scope"
        ));
        assert_eq!(info.container_id, None);
        assert_eq!(info.pod_uid.as_deref(), Some(POD));
        let info = v2(&format!("/machine.slice/libpod-conmon-{ID}.scope"));
        assert_eq!(info.container_id, None);
    }

    #[test]
    fn podman() {
        let info = v2(&format!("/machine.slice/libpod-{ID}.scope"));
        assert_eq!(info.container_id.as_deref(), Some(ID));
        let info = v2(&format!("/machine.slice/libpod-{ID}.scope/container"));
        assert_eq!(info.container_id.as_deref(), Some(ID));
        let info = v2(&format!(
            "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-payload-{ID}"
        ));
        assert_eq!(info.container_id.as_deref(), Some(ID));
        let info = v2(&format!("/libpod_parent/libpod-{ID}"));
        assert_eq!(info.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn host_services_have_no_container() {
        for path in [
            "/system.slice/sshd.service",
            "/system.slice/containerd.service",
            "/system.slice/docker.service",
            "/user.slice/user-1000.slice/session-3.scope",
            "/user.slice/user-1000.slice/user@1000.service/app.slice/run-r4e3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a.scope",
            "/init.scope",
            "/",
            "/kubepods.slice",
            "/kubepods.slice/kubepods-burstable.slice",
        ] {
            let info = v2(path);
            assert_eq!(info.cgroup, path);
            assert_eq!(info.container_id, None, "{path}");
            assert_eq!(info.pod_uid, None, "{path}");
        }
    }

    #[test]
    fn not_quite_an_id() {
        // 63 digits, 65 digits, a non-hex digit.
        for id in [
            "a".repeat(63),
            "a".repeat(65),
            format!("{}g", "a".repeat(63)),
        ] {
            assert_eq!(v2(&format!("/docker/{id}")).container_id, None);
        }
        assert_eq!(v2("/kubepods/burstable/podnot-a-uuid").pod_uid, None);
        assert_eq!(v2("/system.slice/podman.service").pod_uid, None);
    }

    #[test]
    fn v1_only_host_uses_systemd_hierarchy() {
        let text = format!(
            "12:pids:/docker/{ID}\n\
             11:memory:/docker/{ID}\n\
             3:cpu,cpuacct:/docker/{ID}\n\
             1:name=systemd:/system.slice/docker-{ID}.scope\n"
        );
        let info = parse(&text);
        assert_eq!(info.cgroup, format!("/system.slice/docker-{ID}.scope"));
        assert_eq!(info.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn v1_without_systemd_uses_pids() {
        let text = format!("5:memory:/docker/{ID}\n4:pids:/docker/{ID}\n2:cpuset:/\n");
        let info = parse(&text);
        assert_eq!(info.cgroup, format!("/docker/{ID}"));
        assert_eq!(info.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn hybrid_host_with_root_v2_line_uses_v1() {
        let text = format!("9:name=systemd:/\n8:pids:/\n4:memory:/docker/{ID}\n1:cpu:/\n0::/\n");
        let info = parse(&text);
        assert_eq!(info.cgroup, format!("/docker/{ID}"));
        assert_eq!(info.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn v2_line_preferred() {
        let text = format!("1:name=systemd:/user.slice\n0::/system.slice/docker-{ID}.scope\n");
        let info = parse(&text);
        assert_eq!(info.cgroup, format!("/system.slice/docker-{ID}.scope"));
    }

    #[test]
    fn empty_and_garbage() {
        assert_eq!(parse("").cgroup, "/");
        assert_eq!(parse("nonsense\n").cgroup, "/");
        assert_eq!(parse("0::/\n").cgroup, "/");
        // An unknown hierarchy only: its path is still the best there is.
        assert_eq!(parse("3:cpuset:/foo\n").cgroup, "/foo");
    }

    #[test]
    fn reads_own_cgroup() {
        let info = read(std::process::id()).unwrap();
        assert!(info.cgroup.starts_with('/'), "{info:?}");
    }
}
