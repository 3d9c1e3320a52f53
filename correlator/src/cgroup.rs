//! Which container (if any) a cgroup v2 path belongs to.
//!
//! Recognised layouts (the last matching component wins, so the innermost
//! container of docker-in-docker is reported):
//! - Docker, cgroupfs driver: `/docker/<id>`; systemd driver: `docker-<id>.scope`.
//! - containerd (CRI): `cri-containerd-<id>.scope`; kubelet cgroupfs driver:
//!   `/kubepods/<qos>/pod<uid>/<id>`.
//! - CRI-O: `crio-<id>` / `crio-<id>.scope` (`crio-conmon-<id>` is the monitor, not the container).
//! - Podman: `libpod-<id>` / `libpod-<id>.scope` (`libpod-conmon-<id>` likewise).
//!
//! Pod uids come from `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid_with_underscores>.slice`
//! (systemd) components above the container and are reported with dashes.

/// The container a cgroup belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    /// `"docker"`, `"containerd"`, `"cri-o"` or `"podman"`.
    pub runtime: &'static str,
    /// Full container id: 64 lowercase hex digits.
    pub id: String,
    /// Kubernetes pod uid (with dashes), when the container runs in a pod.
    pub pod_uid: Option<String>,
}

/// Runtime name used for processes outside any container.
pub const HOST: &str = "host";

/// Prefixes of systemd scopes / cgroupfs directories that name a container.
const PREFIXES: [(&str, &str); 4] = [
    ("docker-", "docker"),
    ("cri-containerd-", "containerd"),
    ("crio-", "cri-o"),
    ("libpod-", "podman"),
];

/// Parses a cgroup v2 path (relative to the v2 root) into the container it belongs to; `None` on the host.
pub fn parse_container(cgroup_path: &str) -> Option<ContainerRef> {
    let mut found: Option<(&'static str, &str, Option<&str>)> = None;
    let mut pod: Option<&str> = None;
    let mut in_kubepods = false;
    let mut prev = "";
    let mut prev_is_pod = false;
    for comp in cgroup_path.split('/').filter(|c| !c.is_empty()) {
        in_kubepods |= comp.starts_with("kubepods");
        let pod_here = if in_kubepods { pod_uid_of(comp) } else { None };
        if pod_here.is_some() {
            pod = pod_here;
        } else if let Some((runtime, id)) = container_of(comp, prev, prev_is_pod) {
            found = Some((runtime, id, pod));
        }
        prev_is_pod = pod_here.is_some();
        prev = comp;
    }
    found.map(|(runtime, id, pod)| ContainerRef {
        runtime,
        id: id.to_owned(),
        pod_uid: pod.map(|p| p.replace('_', "-")),
    })
}

/// The runtime and id a single path component names, given its parent.
fn container_of<'a>(
    comp: &'a str,
    parent: &str,
    parent_is_pod: bool,
) -> Option<(&'static str, &'a str)> {
    if is_container_id(comp) {
        return match parent {
            "docker" => Some(("docker", comp)),
            _ if parent_is_pod => Some(("containerd", comp)),
            _ => None,
        };
    }
    let name = comp.strip_suffix(".scope").unwrap_or(comp);
    PREFIXES.iter().find_map(|&(prefix, runtime)| {
        let id = name.strip_prefix(prefix)?;
        // `crio-conmon-<id>` / `libpod-conmon-<id>` are not ids anyway; said for the reader.
        (!id.starts_with("conmon-") && is_container_id(id)).then_some((runtime, id))
    })
}

/// The pod uid (still with underscores for systemd slices) a component names.
fn pod_uid_of(comp: &str) -> Option<&str> {
    let uid = if let Some(slice) = comp.strip_suffix(".slice") {
        // kubepods-burstable-pod<uid>.slice, kubepods-pod<uid>.slice
        slice.strip_prefix("kubepods-")?.rsplit_once("pod")?.1
    } else {
        comp.strip_prefix("pod")?
    };
    is_pod_uid(uid).then_some(uid)
}

/// 64 lowercase hex digits.
fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(is_lower_hex)
}

/// A UUID (dashes or systemd's underscores) or the 32-hex hash of a static pod.
fn is_pod_uid(s: &str) -> bool {
    let b = s.as_bytes();
    match b.len() {
        32 => b.iter().copied().all(is_lower_hex),
        36 => b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-' || c == b'_',
            _ => is_lower_hex(c),
        }),
        _ => false,
    }
}

fn is_lower_hex(c: u8) -> bool {
    c.is_ascii_digit() || (b'a'..=b'f').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";

    #[test]
    fn docker_cgroupfs_and_systemd() {
        let c = parse_container(&format!("/docker/{ID}")).expect("docker");
        assert_eq!((c.runtime, c.id.as_str(), c.pod_uid), ("docker", ID, None));
        let c = parse_container(&format!("/system.slice/docker-{ID}.scope")).expect("docker");
        assert_eq!(c.runtime, "docker");
    }

    #[test]
    fn bare_id_needs_a_known_parent() {
        assert_eq!(parse_container(&format!("/foo/{ID}")), None);
        assert_eq!(parse_container(&format!("/{ID}")), None);
    }

    #[test]
    fn pod_uid_needs_kubepods() {
        let p = "/podaaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee/".to_owned() + ID;
        assert_eq!(parse_container(&p), None);
    }

    #[test]
    fn conmon_is_not_a_container() {
        assert_eq!(
            parse_container(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
            None
        );
        assert_eq!(
            parse_container(&format!("/kubepods.slice/crio-conmon-{ID}.scope")),
            None
        );
    }
}
