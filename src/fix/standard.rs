//! The standard rule set, `fixers/*.toml`, built into the binary so `ferry fix` needs no
//! installed data files. A test checks that this list and the directory agree.

use super::error::Result;
use super::rule::{self, Rule};

/// (file name, contents) of every standard rule, in run order.
pub const FILES: &[(&str, &str)] = &[
    (
        "10-fstab-devices.toml",
        include_str!("../../fixers/10-fstab-devices.toml"),
    ),
    (
        "11-crypttab-devices.toml",
        include_str!("../../fixers/11-crypttab-devices.toml"),
    ),
    (
        "12-grub2-devices.toml",
        include_str!("../../fixers/12-grub2-devices.toml"),
    ),
    (
        "13-grub-legacy-devices.toml",
        include_str!("../../fixers/13-grub-legacy-devices.toml"),
    ),
    (
        "14-grub-device-map.toml",
        include_str!("../../fixers/14-grub-device-map.toml"),
    ),
    (
        "15-resume-devices.toml",
        include_str!("../../fixers/15-resume-devices.toml"),
    ),
    (
        "16-extlinux-devices.toml",
        include_str!("../../fixers/16-extlinux-devices.toml"),
    ),
    (
        "20-console-inittab.toml",
        include_str!("../../fixers/20-console-inittab.toml"),
    ),
    (
        "21-console-cmdline.toml",
        include_str!("../../fixers/21-console-cmdline.toml"),
    ),
    (
        "22-console-securetty.toml",
        include_str!("../../fixers/22-console-securetty.toml"),
    ),
    (
        "30-net-persistent-rules.toml",
        include_str!("../../fixers/30-net-persistent-rules.toml"),
    ),
    (
        "31-net-mac-pinning.toml",
        include_str!("../../fixers/31-net-mac-pinning.toml"),
    ),
    (
        "32-net-dhcp.toml",
        include_str!("../../fixers/32-net-dhcp.toml"),
    ),
    (
        "40-initramfs-dracut.toml",
        include_str!("../../fixers/40-initramfs-dracut.toml"),
    ),
    (
        "41-initramfs-tools.toml",
        include_str!("../../fixers/41-initramfs-tools.toml"),
    ),
    (
        "42-initramfs-suse-sysconfig.toml",
        include_str!("../../fixers/42-initramfs-suse-sysconfig.toml"),
    ),
    (
        "43-modprobe-conf.toml",
        include_str!("../../fixers/43-modprobe-conf.toml"),
    ),
    (
        "44-initramfs-alpine.toml",
        include_str!("../../fixers/44-initramfs-alpine.toml"),
    ),
    (
        "50-xorg-driver.toml",
        include_str!("../../fixers/50-xorg-driver.toml"),
    ),
    (
        "60-vmware-tools.toml",
        include_str!("../../fixers/60-vmware-tools.toml"),
    ),
    (
        "61-xen-guest-tools.toml",
        include_str!("../../fixers/61-xen-guest-tools.toml"),
    ),
    (
        "62-hyperv-daemons.toml",
        include_str!("../../fixers/62-hyperv-daemons.toml"),
    ),
    (
        "63-virtualbox-additions.toml",
        include_str!("../../fixers/63-virtualbox-additions.toml"),
    ),
    ("64-kudzu.toml", include_str!("../../fixers/64-kudzu.toml")),
    (
        "70-xen-kernel.toml",
        include_str!("../../fixers/70-xen-kernel.toml"),
    ),
    (
        "71-xen-default-kernel.toml",
        include_str!("../../fixers/71-xen-default-kernel.toml"),
    ),
    (
        "80-device-caches.toml",
        include_str!("../../fixers/80-device-caches.toml"),
    ),
    (
        "81-rpm-db-locks.toml",
        include_str!("../../fixers/81-rpm-db-locks.toml"),
    ),
    (
        "85-qemu-guest-agent.toml",
        include_str!("../../fixers/85-qemu-guest-agent.toml"),
    ),
    (
        "90-selinux-relabel.toml",
        include_str!("../../fixers/90-selinux-relabel.toml"),
    ),
];

/// The standard rules, parsed (a broken built-in rule is a bug the tests catch).
pub fn rules() -> Result<Vec<Rule>> {
    FILES
        .iter()
        .map(|(name, text)| rule::parse(&format!("builtin:fixers/{name}"), text))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_matches_directory() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixers");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".toml"))
            .collect();
        on_disk.sort();
        let listed: Vec<String> = FILES.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(
            listed, on_disk,
            "src/fix/standard.rs must list every fixers/*.toml"
        );
    }

    #[test]
    fn standard_rules_parse_with_unique_names() {
        let rules = rules().unwrap();
        let mut names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FILES.len());
    }

    /// A tree that only lists files (no contents): the xen-pv-kernel rule must not look.
    struct Names(&'static [&'static str]);

    impl super::super::cond::View for Names {
        fn glob(&mut self, pattern: &str) -> Result<Vec<String>> {
            let prefix = pattern.trim_end_matches('*');
            Ok(self
                .0
                .iter()
                .filter(|p| p.starts_with(prefix))
                .map(|p| p.to_string())
                .collect())
        }

        fn read(&mut self, _: &str) -> Result<Option<Vec<u8>>> {
            Ok(None)
        }
    }

    /// The xen-pv-kernel rule follows inspection's `xen_pv_only` fact, not kernel file names:
    /// a Debian `-xen-amd64` (pvops) kernel alone does not trigger it, and a fact that says so
    /// triggers it whatever the names.
    #[test]
    fn xen_pv_kernel_rule_follows_the_fact() {
        use crate::guest::facts::{Facts, Os};
        let rules = rules().unwrap();
        let rule = rules.iter().find(|r| r.name == "xen-pv-kernel").unwrap();
        let facts = |xen_pv_only| Facts {
            os: Os::Linux,
            xen_pv_only,
            ..Facts::default()
        };
        let debian = &mut Names(&["/boot/vmlinuz-4.19.0-xen-amd64"]);
        let skipped = rule.when.check(&facts(false), debian).unwrap();
        assert_eq!(
            skipped.as_deref(),
            Some("some bootable kernel is not a Xen PV-only build")
        );
        let rhel5 = &mut Names(&["/boot/vmlinuz-2.6.18-398.el5"]);
        assert_eq!(rule.when.check(&facts(true), rhel5).unwrap(), None);
    }
}
