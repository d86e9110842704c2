//! The libosinfo short ID of an inspected OS (`debian12`, `rhel9.4`, `win2k22`): what
//! `virt-install --os-variant` takes and what virt-inspector reports as `<osinfo>`. The rules
//! follow libguestfs's (daemon/inspect_osinfo.ml) so that the two tools name a guest alike;
//! where libosinfo has no entry for an OS, there is no ID rather than a guess.

use super::OsInfo;
use crate::guest::facts::Os;

/// Windows build numbers from which a client release is Windows 11 (21H2 is build 22000).
const WIN11_FIRST_BUILD: u32 = 22000;

/// The libosinfo short ID for `info`, if libosinfo names that OS.
pub(crate) fn short_id(info: &OsInfo) -> Option<String> {
    let major = info.major_version?;
    let minor = info.minor_version.unwrap_or(0);
    match info.os_type {
        Os::Windows => windows(info, major, minor),
        Os::Linux => linux(info.distro.as_deref()?, major, minor),
        _ => None,
    }
}

fn linux(distro: &str, major: u32, minor: u32) -> Option<String> {
    Some(match distro {
        "debian" if major >= 4 => format!("debian{major}"),
        "ubuntu" => format!("ubuntu{major}.{minor:02}"),
        "rhel" => format!("rhel{major}.{minor}"),
        "ol" => format!("ol{major}.{minor}"),
        "centos" if major < 7 => format!("centos{major}.{minor}"),
        // libosinfo names every CentOS 7 point release "centos7.0".
        "centos" if major == 7 => "centos7.0".to_string(),
        "centos" => format!("centos{major}"),
        "rocky" | "almalinux" | "fedora" | "mageia" => format!("{distro}{major}"),
        "sles" | "sled" if minor == 0 => format!("{distro}{major}"),
        "sles" | "sled" => format!("{distro}{major}sp{minor}"),
        "opensuse" | "opensuse-leap" => format!("opensuse{major}.{minor}"),
        "alpine" => format!("alpinelinux{major}.{minor}"),
        _ => return None,
    })
}

fn windows(info: &OsInfo, major: u32, minor: u32) -> Option<String> {
    let w = info.windows.as_ref();
    let name = info.product_name.as_deref().unwrap_or("");
    // InstallationType: "Client", "Server" or "Server Core".
    let server = w
        .and_then(|w| w.installation_type.as_deref())
        .is_some_and(|t| t.starts_with("Server"))
        || name.contains("Server");
    let build = w
        .and_then(|w| w.build.as_deref())
        .and_then(|b| b.parse::<u32>().ok())
        .unwrap_or(0);
    let id = match (major, minor) {
        (5, 1) => "winxp",
        (5, 2) if name.contains("XP") => "winxp",
        (5, 2) if name.contains("R2") => "win2k3r2",
        (5, 2) => "win2k3",
        (6, 0) if server => "win2k8",
        (6, 0) => "winvista",
        (6, 1) if server => "win2k8r2",
        (6, 1) => "win7",
        (6, 2) if server => "win2k12",
        (6, 2) => "win8",
        (6, 3) if server => "win2k12r2",
        (6, 3) => "win8.1",
        (10, 0) if server && name.contains("2025") => "win2k25",
        (10, 0) if server && name.contains("2022") => "win2k22",
        (10, 0) if server && name.contains("2019") => "win2k19",
        (10, 0) if server => "win2k16",
        (10, 0) if build >= WIN11_FIRST_BUILD => "win11",
        (10, 0) => "win10",
        _ => return None,
    };
    Some(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::inspect::windows::WindowsInfo;

    fn linux_info(distro: &str, major: u32, minor: u32) -> OsInfo {
        OsInfo {
            os_type: Os::Linux,
            distro: Some(distro.into()),
            major_version: Some(major),
            minor_version: Some(minor),
            ..OsInfo::default()
        }
    }

    fn windows_info(major: u32, minor: u32, name: &str, kind: &str, build: &str) -> OsInfo {
        OsInfo {
            os_type: Os::Windows,
            distro: Some("windows".into()),
            product_name: Some(name.into()),
            major_version: Some(major),
            minor_version: Some(minor),
            windows: Some(WindowsInfo {
                installation_type: Some(kind.into()),
                build: Some(build.into()),
                ..WindowsInfo::default()
            }),
            ..OsInfo::default()
        }
    }

    #[test]
    fn linux_ids_follow_libosinfo() {
        let id = |d, a, b| short_id(&linux_info(d, a, b));
        assert_eq!(id("debian", 12, 4).as_deref(), Some("debian12"));
        assert_eq!(id("ubuntu", 22, 4).as_deref(), Some("ubuntu22.04"));
        assert_eq!(id("rhel", 9, 4).as_deref(), Some("rhel9.4"));
        assert_eq!(id("centos", 6, 10).as_deref(), Some("centos6.10"));
        assert_eq!(id("centos", 7, 9).as_deref(), Some("centos7.0"));
        assert_eq!(id("centos", 8, 5).as_deref(), Some("centos8"));
        assert_eq!(id("sles", 15, 0).as_deref(), Some("sles15"));
        assert_eq!(id("sles", 15, 4).as_deref(), Some("sles15sp4"));
        assert_eq!(id("opensuse-leap", 15, 5).as_deref(), Some("opensuse15.5"));
        assert_eq!(id("rocky", 9, 3).as_deref(), Some("rocky9"));
        assert_eq!(id("alpine", 3, 19).as_deref(), Some("alpinelinux3.19"));
        assert_eq!(id("nixos", 23, 11), None);
        assert_eq!(id("debian", 3, 1), None);
    }

    #[test]
    fn windows_ids_follow_libosinfo() {
        let id = |a, b, n, k, bld| short_id(&windows_info(a, b, n, k, bld));
        let ws22 = "Windows Server 2022 Standard";
        assert_eq!(
            id(10, 0, ws22, "Server", "20348").as_deref(),
            Some("win2k22")
        );
        let ws19 = "Windows Server 2019 Datacenter";
        assert_eq!(
            id(10, 0, ws19, "Server Core", "17763").as_deref(),
            Some("win2k19")
        );
        let ws16 = "Windows Server 2016 Standard";
        assert_eq!(
            id(10, 0, ws16, "Server", "14393").as_deref(),
            Some("win2k16")
        );
        // Windows 11 still calls itself "Windows 10" in ProductName: the build tells.
        let w10 = "Windows 10 Pro";
        assert_eq!(id(10, 0, w10, "Client", "22631").as_deref(), Some("win11"));
        assert_eq!(id(10, 0, w10, "Client", "19045").as_deref(), Some("win10"));
        let w7 = "Windows 7 Professional";
        assert_eq!(id(6, 1, w7, "Client", "7601").as_deref(), Some("win7"));
        let r2 = "Windows Server 2008 R2 Standard";
        assert_eq!(id(6, 1, r2, "Server", "7601").as_deref(), Some("win2k8r2"));
        let xp = "Microsoft Windows XP";
        assert_eq!(id(5, 1, xp, "", "2600").as_deref(), Some("winxp"));
        assert_eq!(id(4, 0, "Windows NT", "", "1381"), None);
    }
}
