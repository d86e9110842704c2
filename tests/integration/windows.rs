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
