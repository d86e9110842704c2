//! LVM2 volume groups built with the real tools on loop devices, with no device-mapper: PVs
//! and VGs come from pvcreate/vgcreate, LVs are added to a vgcfgbackup text and restored, and
//! their contents are written into the image files at the offsets the metadata gives.

use super::run;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether root and the lvm2 tools are here; a loud skip otherwise (a failure with
/// FERRY_REQUIRE_FUSE=1).
pub(crate) fn have_lvm_tools() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    let tools = ["lvm", "losetup", "sfdisk", "mkfs.ext4"].iter().all(|t| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let loops = Path::new("/dev/loop-control").exists();
    if root && tools && loops {
        return true;
    }
    let why = format!(
        "needs root ({root}), lvm/losetup/sfdisk/mkfs.ext4 ({tools}), loop devices ({loops})"
    );
    if std::env::var("FERRY_REQUIRE_FUSE").as_deref() == Ok("1") {
        panic!("FERRY_REQUIRE_FUSE=1 but this LVM test {why}");
    }
    eprintln!("SKIP: LVM test with real tools: {why}");
    false
}

/// lvm's configuration for tests: no devices file, no udev, no hints (loop devices come and go).
pub(crate) const LVM_CONF: &str =
    "devices { use_devicesfile=0 obtain_device_list_from_udev=0 hints=\"none\" } \
                        activation { udev_sync=0 udev_rules=0 monitoring=0 }";

pub(crate) fn lvm(cmd: &str, args: &[&str]) -> String {
    run(Command::new("lvm")
        .arg(cmd)
        .arg("--config")
        .arg(LVM_CONF)
        .args(args)
        .env("LVM_SUPPRESS_FD_WARNINGS", "1"))
}

/// Loop devices, detached on drop.
pub(crate) struct Loops(pub Vec<String>);

impl Loops {
    pub(crate) fn attach(&mut self, file: &Path, offset: u64, size: Option<u64>) -> String {
        let mut c = Command::new("losetup");
        c.arg("-f").arg("--show");
        if offset > 0 {
            c.arg("--offset").arg(offset.to_string());
        }
        if let Some(s) = size {
            c.arg("--sizelimit").arg(s.to_string());
        }
        let dev = run(c.arg(file)).trim().to_string();
        self.0.push(dev.clone());
        dev
    }

    /// Detaches all (flushing the loops' writes into the files) before the files are read.
    pub(crate) fn detach(&mut self) {
        for d in self.0.drain(..) {
            let _ = Command::new("losetup").arg("-d").arg(&d).status();
        }
    }
}

impl Drop for Loops {
    fn drop(&mut self) {
        self.detach();
    }
}

pub(crate) fn vg_name(tag: &str) -> String {
    format!("ferrytest_{tag}_{}", std::process::id())
}

/// One segment for the test's LV text: (pv index, first extent) per stripe.
pub(crate) struct SegSpec {
    pub start: u64,
    pub count: u64,
    pub stripe_size: u64,
    pub stripes: Vec<(usize, u64)>,
}

pub(crate) struct LvSpec {
    pub name: &'static str,
    pub segs: Vec<SegSpec>,
}

pub(crate) fn seg(start: u64, count: u64, pv: usize, pe: u64) -> SegSpec {
    SegSpec {
        start,
        count,
        stripe_size: 0,
        stripes: vec![(pv, pe)],
    }
}

pub(crate) fn lvs_text(lvs: &[LvSpec]) -> String {
    let mut t = String::from("\nlogical_volumes {\n");
    for (i, l) in lvs.iter().enumerate() {
        t += &format!(
            "{} {{\nid = \"ferry{i:01}-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa\"\n\
             status = [\"READ\", \"WRITE\", \"VISIBLE\"]\nflags = []\nsegment_count = {}\n",
            l.name,
            l.segs.len()
        );
        for (k, s) in l.segs.iter().enumerate() {
            let stripes: Vec<String> = s
                .stripes
                .iter()
                .map(|(pv, pe)| format!("\"pv{pv}\", {pe}"))
                .collect();
            t += &format!(
                "segment{} {{\nstart_extent = {}\nextent_count = {}\ntype = \"striped\"\n\
                 stripe_count = {}\n{}stripes = [\n{}\n]\n}}\n",
                k + 1,
                s.start,
                s.count,
                s.stripes.len(),
                if s.stripes.len() > 1 {
                    format!("stripe_size = {}\n", s.stripe_size)
                } else {
                    String::new()
                },
                stripes.join(",\n")
            );
        }
        t += "}\n";
    }
    t + "}\n"
}

/// `vgcfgbackup`, add the LVs inside the VG section, `vgcfgrestore`.
pub(crate) fn restore_with_lvs(dir: &Path, vg: &str, lvs: &[LvSpec]) {
    let f = dir.join(format!("{vg}.backup"));
    lvm("vgcfgbackup", &["-f", f.to_str().unwrap(), vg]);
    let s = std::fs::read_to_string(&f).unwrap();
    let close = s.trim_end().rfind('}').unwrap();
    let new = format!("{}{}{}", &s[..close], lvs_text(lvs), &s[close..]);
    std::fs::write(&f, new).unwrap();
    lvm("vgcfgrestore", &["-f", f.to_str().unwrap(), vg]);
}

/// Where each PV's data lives: image file and byte offset of the first extent in it.
pub(crate) struct PvPlace {
    pub file: PathBuf,
    pub data_start: u64,
}

/// Writes `data` as the LV's contents into the PV files, mapping it independently of ferry:
/// linear pieces as they are, striped ones chunk by chunk, round-robin.
pub(crate) fn write_lv(places: &[PvPlace], extent: u64, l: &LvSpec, data: &[u8]) {
    for s in &l.segs {
        let n = s.stripes.len() as u64;
        let seg_off = s.start * extent;
        let seg_len = s.count * extent;
        let chunk = if n == 1 { seg_len } else { s.stripe_size * 512 };
        for k in 0..seg_len / chunk {
            let (pv, pe) = s.stripes[(k % n) as usize];
            let row = k / n;
            let p = &places[pv];
            let off = p.data_start + pe * extent + row * chunk;
            let from = (seg_off + k * chunk) as usize;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&p.file)
                .unwrap();
            f.write_all_at(&data[from..from + chunk as usize], off)
                .unwrap();
        }
    }
}

pub(crate) fn lv_size(l: &LvSpec, extent: u64) -> usize {
    l.segs.iter().map(|s| s.count * extent).sum::<u64>() as usize
}
