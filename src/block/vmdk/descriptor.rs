//! The VMDK text descriptor (VMware "Virtual Disk Format 5.0", section "The Descriptor File").

/// True if `head` (the first bytes of a file) is a VMDK text descriptor: the usual header comment,
/// or a `createType=` line among the first lines of plain text.
pub fn looks_like_descriptor(head: &[u8]) -> bool {
    let text = match std::str::from_utf8(&head[..head.len().min(1024)]) {
        Ok(t) => t,
        Err(e) => match std::str::from_utf8(&head[..e.valid_up_to()]) {
            Ok(t) => t,
            Err(_) => return false,
        },
    };
    if text.trim_start().starts_with("# Disk DescriptorFile") {
        return true;
    }
    text.lines().take(32).any(|l| {
        l.trim_start()
            .to_ascii_lowercase()
            .starts_with("createtype")
    }) && text
        .lines()
        .take(32)
        .any(|l| l.trim_start().starts_with("version"))
}
