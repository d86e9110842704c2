//! The host's libosinfo database (osinfo-db), read for one thing: the OS ID (a URI such as
//! `http://microsoft.com/win/2k22`) of a short ID that inspection found (`win2k22`), which
//! the target's domain XML records as virt-v2v does. Where the database is absent or does not
//! know the short ID (a release newer than the database), there is no ID: libvirt needs none.

use std::path::{Path, PathBuf};

/// Where libosinfo looks, system data first (its `OSINFO_SYSTEM_DIR`, then the packaged
/// osinfo-db, then local and administrator additions).
const DIRS: [&str; 3] = [
    "/usr/share/osinfo",
    "/usr/local/share/osinfo",
    "/etc/osinfo",
];
/// Files read at most: osinfo-db 2022 has about 700 OS files.
const MAX_FILES: usize = 20_000;
/// A larger OS file is not one of osinfo-db's (the largest are a few hundred KiB).
const MAX_FILE_BYTES: u64 = 4 << 20;

/// The libosinfo OS ID whose `<short-id>` is `short`, if the host's database has one.
pub(crate) fn os_id(short: &str) -> Option<String> {
    let system = std::env::var_os("OSINFO_SYSTEM_DIR").map(PathBuf::from);
    let dirs = system
        .iter()
        .map(PathBuf::as_path)
        .chain(DIRS.iter().map(Path::new));
    let mut budget = MAX_FILES;
    for dir in dirs {
        if let Some(id) = search(&dir.join("os"), short, &mut budget) {
            return Some(id);
        }
    }
    None
}

/// Searches `os/<vendor>/<os>.xml` under `root`.
fn search(root: &Path, short: &str, budget: &mut usize) -> Option<String> {
    let want = format!("<short-id>{short}</short-id>");
    for vendor in std::fs::read_dir(root).ok()?.flatten() {
        let Ok(files) = std::fs::read_dir(vendor.path()) else {
            continue;
        };
        for f in files.flatten() {
            *budget = budget.checked_sub(1)?;
            let p = f.path();
            if p.extension().is_none_or(|e| e != "xml")
                || f.metadata().map_or(true, |m| m.len() > MAX_FILE_BYTES)
            {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            if text.contains(&want) {
                return os_element_id(&text);
            }
        }
    }
    None
}

/// The `id` attribute of the file's `<os id="...">` element.
fn os_element_id(text: &str) -> Option<String> {
    let (_, rest) = text.split_once("<os id=\"")?;
    let (id, _) = rest.split_once('"')?;
    (!id.is_empty()).then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_id_of_a_short_id() {
        let d = tempfile::tempdir().unwrap();
        let vendor = d.path().join("os/microsoft.com");
        std::fs::create_dir_all(&vendor).unwrap();
        std::fs::write(
            vendor.join("win-2k22.xml"),
            "<libosinfo version=\"0.0.1\">\n  <os id=\"http://microsoft.com/win/2k22\">\n    \
             <short-id>win2k22</short-id>\n  </os>\n</libosinfo>\n",
        )
        .unwrap();
        std::fs::write(vendor.join("notes.txt"), "<short-id>win10</short-id>").unwrap();
        let mut budget = MAX_FILES;
        assert_eq!(
            search(&d.path().join("os"), "win2k22", &mut budget).as_deref(),
            Some("http://microsoft.com/win/2k22")
        );
        assert_eq!(search(&d.path().join("os"), "win10", &mut budget), None);
        assert_eq!(search(&d.path().join("os"), "win2k2", &mut budget), None);
        assert_eq!(
            search(&d.path().join("absent"), "win2k22", &mut budget),
            None
        );
    }
}
