//! The boot loader and its configuration file, and whether the guest boots by UEFI.
//!
//! GRUB 2 keeps its configuration in /boot/grub2 (Red Hat, SUSE) or /boot/grub (Debian); on
//! UEFI systems the real file may instead be on the EFI system partition under
//! `EFI/<vendor>/grub.cfg` (RHEL 8), where other distributions keep only a stub that loads
//! the /boot one, so /boot's wins. GRUB legacy uses menu.lst or Red Hat's grub.conf;
//! systemd-boot reads `loader/entries/*.conf` on the ESP or /boot (Boot Loader Specification),
//! and so does grub2 on Fedora and RHEL 8+ (its grub.cfg just runs `blscfg`): the kernels it
//! offers, and which one boots by default, are only in those entries and in grubenv.

use super::{Boot, BootEntry, Ctx};

use crate::guest::facts::Bootloader;
use crate::guest::fstab::Entry;

/// Where the EFI system partition is mounted, by convention.
const ESP_MOUNTS: &[&str] = &["/boot/efi", "/efi", "/boot"];

/// A BLS entry is a few hundred bytes; grubenv is one 1 KiB block.
const MAX_ENTRY: u64 = 64 * 1024;
/// More entries than any guest keeps (one per installed kernel, plus rescue).
const MAX_ENTRIES: usize = 64;

/// `EFI/<vendor>/<file>` on every mounted ESP.
fn efi_files(cx: &Ctx, file: &str) -> Vec<String> {
    let mut out = Vec::new();
    for esp in ESP_MOUNTS {
        let dir = format!("{esp}/EFI");
        for vendor in cx.list(&dir) {
            let p = format!("{dir}/{vendor}/{file}");
            if cx.exists(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// The first of `paths` that exists, canonical.
fn first(cx: &Ctx, paths: impl IntoIterator<Item = String>) -> Option<String> {
    paths
        .into_iter()
        .find(|p| cx.exists(p))
        .and_then(|p| cx.resolve(&p))
}

fn owned(paths: &[&str]) -> Vec<String> {
    paths.iter().map(|p| p.to_string()).collect()
}

/// The directory holding `loader/entries` (an ESP or /boot), and the entries' file names,
/// sorted.
fn bls_dir(cx: &Ctx) -> Option<(&'static str, Vec<String>)> {
    ESP_MOUNTS.iter().find_map(|esp| {
        let dir = format!("{esp}/loader/entries");
        cx.is_dir(&dir).then(|| {
            let mut names: Vec<String> = cx
                .list(&dir)
                .into_iter()
                .filter(|n| n.ends_with(".conf") && !n.starts_with('.'))
                .collect();
            names.sort();
            (*esp, names)
        })
    })
}

/// `key value` of a grubenv or loader.conf (`key=value` in grubenv).
fn setting(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix(key)?;
        let v = rest.strip_prefix('=').or_else(|| {
            rest.starts_with(char::is_whitespace)
                .then(|| rest.trim_start())
        })?;
        Some(v.trim().to_string()).filter(|v| !v.is_empty())
    })
}

/// Parses one entry file: `key value` lines, `#` comments.
fn bls_entry(cx: &Ctx, root: &str, path: String, text: &str) -> BootEntry {
    let mut e = BootEntry {
        path,
        ..BootEntry::default()
    };
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once(char::is_whitespace)
            .map(|(k, v)| (k, v.trim()))
            .unwrap_or((line, ""));
        let value = Some(value.to_string()).filter(|v| !v.is_empty());
        match key {
            "title" => e.title = value,
            "version" => e.version = value,
            "linux" => e.linux = value,
            "options" => e.options = value,
            "initrd" => e.initrd.extend(
                value
                    .iter()
                    .flat_map(|v| v.split_whitespace())
                    .filter(|w| !w.starts_with('$'))
                    .map(String::from),
            ),
            _ => {}
        }
    }
    // `linux` is a path on the filesystem that holds the entries: /boot's own when /boot
    // is a mount of its own, the root's otherwise.
    e.kernel = e.linux.as_deref().and_then(|l| {
        let l = format!("/{}", l.trim_start_matches('/'));
        [format!("{}{l}", root.trim_end_matches('/')), l]
            .into_iter()
            .find(|p| cx.exists(p))
            .and_then(|p| cx.resolve(&p))
    });
    e
}

/// The BLS entries and which is the default: grub2 boots grubenv's `saved_entry` (an
/// entry's file name without `.conf`), systemd-boot loader.conf's `default` (a name or a
/// glob; only exact names are matched here). Without either, the first in the menu's order
/// (grub2's blscfg and systemd-boot both sort by version, newest first) is not guessed.
fn bls_entries(cx: &Ctx, loader: &Bootloader, config: Option<&str>) -> Vec<BootEntry> {
    let Some((root, names)) = bls_dir(cx) else {
        return Vec::new();
    };
    if names.len() > MAX_ENTRIES {
        cx.warn(format!(
            "{root}/loader/entries: {} entries; only {MAX_ENTRIES} looked at",
            names.len()
        ));
    }
    let default = match loader {
        Bootloader::Grub2 => {
            let dir = config.and_then(|c| c.rsplit_once('/')).map(|(d, _)| d);
            dir.into_iter()
                .map(|d| format!("{d}/grubenv"))
                .chain(["/boot/grub2/grubenv".to_string()])
                .find_map(|p| cx.read_text(&p, MAX_ENTRY))
                .and_then(|t| setting(&t, "saved_entry"))
        }
        _ => cx
            .read_text(&format!("{root}/loader/loader.conf"), MAX_ENTRY)
            .and_then(|t| setting(&t, "default")),
    }
    .map(|d| d.trim_end_matches(".conf").to_string());
    names
        .into_iter()
        .take(MAX_ENTRIES)
        .filter_map(|n| {
            let p = format!("{root}/loader/entries/{n}");
            let text = cx.read_text(&p, MAX_ENTRY)?;
            let mut e = bls_entry(cx, root, cx.resolve(&p).unwrap_or(p), &text);
            e.default = default.as_deref() == n.strip_suffix(".conf");
            Some(e)
        })
        .collect()
}

pub(super) fn detect(cx: &Ctx, fstab: &[Entry]) -> Boot {
    let mut b = loader(cx, fstab);
    if matches!(b.loader, Bootloader::Grub2 | Bootloader::SystemdBoot) {
        b.entries = bls_entries(cx, &b.loader, b.config.as_deref());
    }
    b
}

fn loader(cx: &Ctx, fstab: &[Entry]) -> Boot {
    let efi_binaries = ESP_MOUNTS.iter().any(|esp| {
        cx.list(&format!("{esp}/EFI")).iter().any(|vendor| {
            cx.list(&format!("{esp}/EFI/{vendor}"))
                .iter()
                .any(|f| f.to_ascii_lowercase().ends_with(".efi"))
        })
    });
    let esp_in_fstab = fstab
        .iter()
        .any(|e| (e.file == "/boot/efi" || e.file == "/efi") && !e.is_noauto());
    let efi = efi_binaries || esp_in_fstab;

    let mut grub2 = owned(&["/boot/grub2/grub.cfg", "/boot/grub/grub.cfg"]);
    grub2.extend(efi_files(cx, "grub.cfg"));
    if let Some(config) = first(cx, grub2) {
        return Boot {
            loader: Bootloader::Grub2,
            config: Some(config),
            efi,
            entries: Vec::new(),
            device: None,
        };
    }
    let mut legacy = owned(&["/boot/grub/grub.conf", "/boot/grub/menu.lst"]);
    legacy.extend(efi_files(cx, "grub.conf"));
    if let Some(config) = first(cx, legacy) {
        return Boot {
            loader: Bootloader::Grub,
            config: Some(config),
            efi,
            entries: Vec::new(),
            device: None,
        };
    }
    let ext = owned(&[
        "/boot/extlinux/extlinux.conf",
        "/boot/extlinux.conf",
        "/extlinux.conf",
        "/boot/syslinux/syslinux.cfg",
        "/boot/syslinux/extlinux.conf",
    ]);
    if let Some(config) = first(cx, ext) {
        return Boot {
            loader: Bootloader::Extlinux,
            config: Some(config),
            efi,
            entries: Vec::new(),
            device: None,
        };
    }
    for esp in ESP_MOUNTS {
        let entries = format!("{esp}/loader/entries");
        if cx.is_dir(&entries) {
            let conf = format!("{esp}/loader/loader.conf");
            let config = if cx.exists(&conf) { conf } else { entries };
            return Boot {
                loader: Bootloader::SystemdBoot,
                config: cx.resolve(&config),
                efi: true,
                entries: Vec::new(),
                device: None,
            };
        }
    }
    Boot {
        loader: Bootloader::Unknown,
        config: None,
        efi,
        entries: Vec::new(),
        device: None,
    }
}

#[cfg(test)]
mod tests {
    use super::setting;

    #[test]
    fn grubenv_and_loader_conf_settings() {
        let env =
            "# GRUB Environment Block\nsaved_entry=abc-4.18.0\nkernelopts=root=/dev/x ro\n####";
        assert_eq!(setting(env, "saved_entry").as_deref(), Some("abc-4.18.0"));
        assert_eq!(
            setting(env, "kernelopts").as_deref(),
            Some("root=/dev/x ro")
        );
        assert_eq!(
            setting("default  arch.conf\ntimeout 3\n", "default").as_deref(),
            Some("arch.conf")
        );
        assert_eq!(setting("defaultx=1\n", "default"), None);
        assert_eq!(setting("saved_entry=\n", "saved_entry"), None);
    }
}
