//! Registry hives and Windows inspection, against hivex (`hivexregedit --export`, `hivexget`)
//! on the corpus hives and on a Windows-shaped guest built here.

use crate::common;
use ferry::regf::Hive;
use std::collections::BTreeSet;
use std::path::Path;

/// (key path, value name, type, data) for every value, and every key path with an empty
/// name and type `u32::MAX` (so that keys without values count too).
type Listing = BTreeSet<(String, String, u32, Vec<u8>)>;

fn ours(path: &Path) -> Listing {
    let hive = Hive::open(std::fs::read(path).unwrap()).unwrap();
    let mut out = Listing::new();
    hive.walk(&mut |p, k| {
        out.insert((p.to_string(), String::new(), u32::MAX, Vec::new()));
        for v in k.values()? {
            out.insert((p.to_string(), v.name, v.kind, v.data));
        }
        Ok(())
    })
    .unwrap();
    out
}

fn text(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        // hivexregedit prints Latin-1 names as their bytes.
        Err(_) => b.iter().map(|&c| char::from(c)).collect(),
    }
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            if let Some(n) = it.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The listing `hivexregedit --export` gives (its .reg text parsed).
fn theirs(path: &Path) -> Listing {
    let out = std::process::Command::new("hivexregedit")
        .arg("--export")
        .arg(path)
        .arg("\\")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hivexregedit failed on {}",
        path.display()
    );
    let mut lines: Vec<String> = Vec::new();
    let mut cont = false;
    for raw in out.stdout.split(|&b| b == b'\n') {
        let l = text(raw);
        if cont {
            let last = lines.last_mut().unwrap();
            last.push_str(l.trim_start());
        } else {
            lines.push(l.clone());
        }
        cont = l.ends_with('\\') && !l.starts_with('[');
        if cont {
            lines.last_mut().unwrap().pop();
        }
    }
    let mut set = Listing::new();
    let mut key = String::new();
    for l in lines {
        if l.starts_with('[') && l.ends_with(']') {
            key = l[1..l.len() - 1].to_string();
            set.insert((key.clone(), String::new(), u32::MAX, Vec::new()));
            continue;
        }
        let (name, data) = if let Some(d) = l.strip_prefix("@=") {
            (String::new(), d.to_string())
        } else if let Some(r) = l.strip_prefix('"') {
            // The name ends at the first unescaped quote followed by '='.
            let mut end = None;
            let b = r.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'\\' {
                    i += 2;
                    continue;
                }
                if b[i] == b'"' && b.get(i + 1) == Some(&b'=') {
                    end = Some(i);
                    break;
                }
                i += 1;
            }
            let e = end.unwrap_or_else(|| panic!("unparsed .reg line {l:?}"));
            (unescape(&r[..e]), r[e + 2..].to_string())
        } else {
            continue;
        };
        let (kind, bytes) = if let Some(h) = data.strip_prefix("dword:") {
            (
                4,
                u32::from_str_radix(h, 16).unwrap().to_le_bytes().to_vec(),
            )
        } else if let Some(rest) = data.strip_prefix("hex(") {
            let (t, hex) = rest.split_once("):").unwrap();
            (u32::from_str_radix(t, 16).unwrap(), hex_bytes(hex))
        } else if let Some(hex) = data.strip_prefix("hex:") {
            (3, hex_bytes(hex))
        } else {
            panic!("unparsed .reg data {data:?}");
        };
        set.insert((key.clone(), name, kind, bytes));
    }
    set
}

fn hex_bytes(s: &str) -> Vec<u8> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| u8::from_str_radix(x.trim(), 16).unwrap())
        .collect()
}

fn assert_same_listing(path: &Path) {
    let a = ours(path);
    let b = theirs(path);
    let only_ours: Vec<_> = a.difference(&b).take(5).collect();
    let only_theirs: Vec<_> = b.difference(&a).take(5).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "{}: ferry only {only_ours:?}\nhivex only {only_theirs:?}",
        path.display()
    );
    assert!(
        a.len() > 1 || path.ends_with("minimal"),
        "{}: nothing listed",
        path.display()
    );
    eprintln!("{}: {} keys and values agree", path.display(), a.len());
}

fn hivexget(hive: &Path, key: &str, value: &str) -> String {
    common::run_tool("hivexget", &[hive.to_str().unwrap(), key, value])
        .trim_end_matches('\n')
        .to_string()
}

#[test]
fn corpus_hives_list_as_hivex_lists_them() {
    // FERRY_CORPUS points at the corpus from a worktree where ../shared is absent.
    let Some(corpus) = std::env::var_os("FERRY_CORPUS")
        .map(std::path::PathBuf::from)
        .or_else(common::corpus)
    else {
        return;
    };
    if !common::have_tools(&["hivexregedit", "hivexget"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for name in ["minimal", "special", "rlenvalue_test_hive"] {
        assert_same_listing(&corpus.join("hivex-images").join(name));
    }
    let system = common::unpack(&corpus.join("dissect.regf/SYSTEM.gz"), tmp.path());
    let before = common::sha256_file(&system);
    assert_same_listing(&system);
    let hive = Hive::open(std::fs::read(&system).unwrap()).unwrap();
    let current = hive.value("\\Select", "Current").unwrap().unwrap();
    assert_eq!(
        current.number().unwrap().to_string(),
        hivexget(&system, "\\Select", "Current")
    );
    let cs = format!("\\ControlSet{:03}", current.number().unwrap());
    for (key, value) in [
        (
            format!("{cs}\\Control\\ComputerName\\ComputerName"),
            "ComputerName",
        ),
        (format!("{cs}\\Services\\Tcpip\\Parameters"), "Hostname"),
        (format!("{cs}\\Control"), "SystemBootDevice"),
    ] {
        let oracle = hivexget(&system, &key, value);
        // Case-insensitive lookup, as Windows does.
        let got = hive
            .value(&key.to_uppercase(), &value.to_lowercase())
            .unwrap()
            .unwrap_or_else(|| panic!("{key} {value} missing"));
        assert_eq!(got.string().unwrap(), oracle, "{key} {value}");
    }
    assert_eq!(before, common::sha256_file(&system));
}

/// Unmounts an ntfs-3g mount when dropped.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A Windows-shaped NTFS volume (hives merged by hivexregedit into copies of hivex's
/// `minimal`, a PE ntoskrnl.exe): `ferry inspect --json` says what hivexget reads.
#[test]
fn windows_guest_inspects_as_its_hives_say() {
    let Some(corpus) = std::env::var_os("FERRY_CORPUS")
        .map(std::path::PathBuf::from)
        .or_else(common::corpus)
    else {
        return;
    };
    if !common::have_tools(&["hivexregedit", "hivexget", "mkntfs", "ntfs-3g"])
        || !Path::new("/dev/fuse").exists()
    {
        eprintln!("SKIP: needs hivex, mkntfs, ntfs-3g and /dev/fuse");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let minimal = corpus.join("hivex-images/minimal");
    let sw_reg = "Windows Registry Editor Version 5.00\n\n[\\Microsoft]\n\n[\\Microsoft\\Windows NT]\n\n\
        [\\Microsoft\\Windows NT\\CurrentVersion]\n\"ProductName\"=\"Windows Server 2022 Standard\"\n\
        \"CurrentMajorVersionNumber\"=dword:0000000a\n\"CurrentMinorVersionNumber\"=dword:00000000\n\
        \"CurrentBuildNumber\"=\"20348\"\n\"EditionID\"=\"ServerStandard\"\n\"InstallationType\"=\"Server\"\n";
    let sys_reg = "Windows Registry Editor Version 5.00\n\n[\\Select]\n\"Current\"=dword:00000002\n\n\
        [\\ControlSet002]\n\n[\\ControlSet002\\Control]\n\n[\\ControlSet002\\Control\\ComputerName]\n\n\
        [\\ControlSet002\\Control\\ComputerName\\ComputerName]\n\"ComputerName\"=\"WIN-FERRY\"\n\n\
        [\\ControlSet002\\Services]\n\n[\\ControlSet002\\Services\\viostor]\n\"Start\"=dword:00000000\n\n\
        [\\ControlSet002\\Services\\netkvm]\n\"Start\"=dword:00000003\n\n\
        [\\MountedDevices]\n\"\\\\DosDevices\\\\C:\"=hex:78,56,34,12,00,00,10,00,00,00,00,00\n";
    for (hive, reg, prefix) in [
        ("SOFTWARE", sw_reg, "HKEY_LOCAL_MACHINE\\SOFTWARE"),
        ("SYSTEM", sys_reg, "HKEY_LOCAL_MACHINE\\SYSTEM"),
    ] {
        std::fs::copy(&minimal, d.join(hive)).unwrap();
        std::fs::write(d.join(format!("{hive}.reg")), reg).unwrap();
        common::run_tool(
            "hivexregedit",
            &[
                "--merge",
                d.join(hive).to_str().unwrap(),
                "--prefix",
                prefix,
                d.join(format!("{hive}.reg")).to_str().unwrap(),
            ],
        );
    }
    let img = d.join("sys.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    common::run_tool("mkntfs", &["-q", "-F", "-f", img.to_str().unwrap()]);
    let mnt = d.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    common::run_tool("ntfs-3g", &[img.to_str().unwrap(), mnt.to_str().unwrap()]);
    {
        let _guard = Unmount(mnt.clone());
        // Letter case as Windows spells it, not as ferry looks it up.
        let config = mnt.join("WINDOWS/system32/Config");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::copy(d.join("SOFTWARE"), config.join("SOFTWARE")).unwrap();
        std::fs::copy(d.join("SYSTEM"), config.join("system")).unwrap();
        let mut pe = vec![0u8; 1024];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
        std::fs::write(mnt.join("WINDOWS/system32/ntoskrnl.exe"), pe).unwrap();
    }
    let before = common::sha256_file(&img);
    let j = common::ferry_json(&["inspect", "--json", img.to_str().unwrap()]);
    assert_eq!(before, common::sha256_file(&img));
    let r = &j["roots"][0];
    let sw = d.join("SOFTWARE");
    let sys = d.join("SYSTEM");
    let cv = "\\Microsoft\\Windows NT\\CurrentVersion";
    assert_eq!(r["type"], "windows");
    assert_eq!(r["distro"], "windows");
    assert_eq!(r["arch"], "x86_64");
    assert_eq!(r["product_name"], hivexget(&sw, cv, "ProductName"));
    assert_eq!(
        r["major_version"].to_string(),
        hivexget(&sw, cv, "CurrentMajorVersionNumber")
    );
    assert_eq!(
        r["minor_version"].to_string(),
        hivexget(&sw, cv, "CurrentMinorVersionNumber")
    );
    let w = &r["windows"];
    assert_eq!(w["build"], hivexget(&sw, cv, "CurrentBuildNumber"));
    assert_eq!(w["edition"], hivexget(&sw, cv, "EditionID"));
    assert_eq!(
        w["installation_type"],
        hivexget(&sw, cv, "InstallationType")
    );
    let cur = hivexget(&sys, "\\Select", "Current");
    let cs = format!("ControlSet{:03}", cur.parse::<u32>().unwrap());
    assert_eq!(w["current_control_set"], cs);
    assert_eq!(
        r["hostname"],
        hivexget(
            &sys,
            &format!("\\{cs}\\Control\\ComputerName\\ComputerName"),
            "ComputerName"
        )
    );
    for (i, svc) in ["viostor", "netkvm"].iter().enumerate() {
        let drv = w["virtio_drivers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == *svc)
            .unwrap_or_else(|| panic!("{svc} missing: {w}"));
        assert_eq!(
            drv["start"].to_string(),
            hivexget(&sys, &format!("\\{cs}\\Services\\{svc}"), "Start"),
            "{i}"
        );
    }
    assert_eq!(w["drive_letters"][0]["letter"], "C:");
    assert_eq!(w["drive_letters"][0]["mbr_signature"], "0x12345678");
    assert_eq!(w["drive_letters"][0]["mbr_offset"], 1 << 20);
}
