//! `firstboot`: scripts that run once when the converted guest first boots, for what file
//! edits cannot do (rebuild the initramfs, remove packages).
//!
//! The layout follows virt-customize's: a runner script in a directory of its own, the
//! scripts in `scripts/` named by priority so they sort, and the runner started by whatever
//! the guest's init system reads: a systemd unit, SysV rc links (in the Red Hat, SUSE or
//! Debian layout), an OpenRC service, and on Debian's dependency-based SysV boot (which only
//! starts what insserv registered) a line in /etc/rc.local. The runner moves each script
//! aside before running it, so a script that reboots does not run twice, logs to
//! /root/ferry-firstboot.log, and once the directory is empty removes its own start links.

use super::facts::{Facts, InitSystem};

pub const DIR: &str = "/usr/lib/ferry-firstboot";
pub const RUNNER: &str = "/usr/lib/ferry-firstboot/firstboot.sh";
pub const UNIT: &str = "/usr/lib/systemd/system/ferry-firstboot.service";
pub const UNIT_LINK: &str = "/etc/systemd/system/multi-user.target.wants/ferry-firstboot.service";
const RC_LOCAL_LINE: &str =
    "[ -x /usr/lib/ferry-firstboot/firstboot.sh ] && /usr/lib/ferry-firstboot/firstboot.sh start";

/// The runner: runs each script once, in name order.
const RUNNER_SH: &str = r#"#!/bin/sh
### BEGIN INIT INFO
# Provides:          ferry-firstboot
# Required-Start:    $local_fs $network $syslog
# Required-Stop:
# Default-Start:     2 3 5
# Default-Stop:
# Short-Description: Runs the scripts ferry fix left for the first boot
### END INIT INFO
# Installed by `ferry fix`. Each script in scripts/ runs once, in name order; its output
# goes to /root/ferry-firstboot.log. When none is left, the start links are removed.

d=/usr/lib/ferry-firstboot
log=/root/ferry-firstboot.log

case "$1" in
  start|"") ;;
  *) exit 0 ;;
esac

mkdir -p "$d/done"
for f in "$d"/scripts/*; do
  [ -f "$f" ] || continue
  name=$(basename "$f")
  # Moved first: a script that reboots the guest must not run again.
  mv "$f" "$d/done/$name" || continue
  echo "=== $(date) $name" >>"$log"
  sh "$d/done/$name" >>"$log" 2>&1
  echo "=== $name exited $?" >>"$log"
done

if [ -z "$(ls -A "$d/scripts" 2>/dev/null)" ]; then
  rm -f /etc/systemd/system/multi-user.target.wants/ferry-firstboot.service \
        /etc/rc.d/rc[235].d/S99ferry-firstboot /etc/rc[235].d/S99ferry-firstboot \
        /etc/init.d/rc[235].d/S99ferry-firstboot /etc/runlevels/default/ferry-firstboot
fi
exit 0
"#;

const UNIT_TEXT: &str = "[Unit]
Description=Scripts ferry fix left for the first boot
After=network.target
Before=display-manager.service
ConditionDirectoryNotEmpty=/usr/lib/ferry-firstboot/scripts

[Service]
Type=oneshot
ExecStart=/usr/lib/ferry-firstboot/firstboot.sh start
RemainAfterExit=yes
TimeoutSec=0
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
";

const OPENRC_TEXT: &str = "#!/sbin/openrc-run
# Installed by `ferry fix`: runs the scripts left for the first boot.
description=\"Scripts ferry fix left for the first boot\"

depend() {
\tafter *
}

start() {
\t/usr/lib/ferry-firstboot/firstboot.sh start
}
";

/// One primitive the engine carries out through its overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Write {
        path: String,
        content: Vec<u8>,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    /// Ensure `line` in an existing file, before its `exit 0` line.
    RcLocal {
        path: String,
        line: String,
    },
}

/// What the engine can tell about the tree for choosing the start mechanisms.
pub trait Probe {
    fn is_dir(&mut self, path: &str) -> bool;
    fn exists(&mut self, path: &str) -> bool;
}

/// The file name of a script: priority, rule and step name, so it sorts and is stable
/// across runs (a second `ferry fix` rewrites the same file).
pub fn script_path(priority: u32, rule: &str, name: &str) -> String {
    format!("{DIR}/scripts/{priority:04}-{rule}-{name}")
}

/// The operations that install the runner for this guest and one script.
pub fn install(facts: &Facts, probe: &mut dyn Probe, script: &str, path: &str) -> Vec<Op> {
    let mut ops = vec![Op::Write {
        path: RUNNER.into(),
        content: RUNNER_SH.as_bytes().to_vec(),
        mode: 0o755,
    }];
    let init = facts.init;
    let unknown = init == InitSystem::Unknown;
    if init == InitSystem::Systemd || (unknown && probe.is_dir("/etc/systemd/system")) {
        ops.push(Op::Write {
            path: UNIT.into(),
            content: UNIT_TEXT.as_bytes().to_vec(),
            mode: 0o644,
        });
        ops.push(Op::Symlink {
            path: UNIT_LINK.into(),
            target: UNIT.into(),
        });
    }
    if init == InitSystem::Openrc || (unknown && probe.is_dir("/etc/runlevels")) {
        ops.push(Op::Write {
            path: "/etc/init.d/ferry-firstboot".into(),
            content: OPENRC_TEXT.as_bytes().to_vec(),
            mode: 0o755,
        });
        ops.push(Op::Symlink {
            path: "/etc/runlevels/default/ferry-firstboot".into(),
            target: "/etc/init.d/ferry-firstboot".into(),
        });
    }
    // SysV (and upstart, which runs the SysV rc scripts too). Not on systemd guests: the
    // sysv generator would start the runner a second time beside the unit.
    let sysv = matches!(init, InitSystem::Sysvinit | InitSystem::Upstart)
        || (unknown && !probe.is_dir("/etc/runlevels"));
    if sysv && (probe.is_dir("/etc/rc.d") || probe.is_dir("/etc/init.d")) {
        let family = facts.family();
        let layout = match family.as_str() {
            "rhel" | "suse" | "debian" => family.clone(),
            _ if probe.is_dir("/etc/rc.d/rc3.d") => "rhel".into(),
            _ => "debian".into(),
        };
        for rl in ["2", "3", "5"] {
            match layout.as_str() {
                "rhel" => ops.push(Op::Symlink {
                    path: format!("/etc/rc.d/rc{rl}.d/S99ferry-firstboot"),
                    target: RUNNER.into(),
                }),
                "suse" => ops.push(Op::Symlink {
                    path: format!("/etc/init.d/rc{rl}.d/S99ferry-firstboot"),
                    target: "../ferry-firstboot".into(),
                }),
                _ => ops.push(Op::Symlink {
                    path: format!("/etc/rc{rl}.d/S99ferry-firstboot"),
                    target: "../init.d/ferry-firstboot".into(),
                }),
            }
        }
        if layout != "rhel" {
            ops.push(Op::Symlink {
                path: "/etc/init.d/ferry-firstboot".into(),
                target: RUNNER.into(),
            });
        }
        if layout == "debian"
            && probe.exists("/etc/init.d/.depend.start")
            && probe.exists("/etc/rc.local")
        {
            ops.push(Op::RcLocal {
                path: "/etc/rc.local".into(),
                line: RC_LOCAL_LINE.into(),
            });
        }
    }
    let mut body = script.to_string();
    if !body.starts_with("#!") {
        body.insert_str(0, "#!/bin/sh\n");
    }
    if !body.ends_with('\n') {
        body.push('\n');
    }
    ops.push(Op::Write {
        path: path.into(),
        content: body.into_bytes(),
        mode: 0o755,
    });
    ops
}
