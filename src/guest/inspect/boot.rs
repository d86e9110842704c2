//! The boot loader and its configuration file, and whether the guest boots by UEFI.
//!
//! GRUB 2 keeps its configuration in /boot/grub2 (Red Hat, SUSE) or /boot/grub (Debian); on
//! UEFI systems the real file may instead be on the EFI system partition under
//! `EFI/<vendor>/grub.cfg` (RHEL 8), where other distributions keep only a stub that loads
//! the /boot one, so /boot's wins. GRUB legacy uses menu.lst or Red Hat's grub.conf;
//! systemd-boot reads `loader/entries/*.conf` on the ESP or /boot (Boot Loader Specification).

use super::{Boot, Ctx};
use crate::guest::facts::Bootloader;
use crate::guest::fstab::Entry;

/// Where the EFI system partition is mounted, by convention.
const ESP_MOUNTS: &[&str] = &["/boot/efi", "/efi", "/boot"];

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

pub(super) fn detect(cx: &Ctx, fstab: &[Entry]) -> Boot {
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
        };
    }
    let mut legacy = owned(&["/boot/grub/grub.conf", "/boot/grub/menu.lst"]);
    legacy.extend(efi_files(cx, "grub.conf"));
    if let Some(config) = first(cx, legacy) {
        return Boot {
            loader: Bootloader::Grub,
            config: Some(config),
            efi,
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
            };
        }
    }
    Boot {
        loader: Bootloader::Unknown,
        config: None,
        efi,
    }
}
