//! A check of a TorchScript file in Rust, before libtorch's C++ reader sees it.
//!
//! A TorchScript file is a zip archive (stored or deflated entries under one top folder:
//! `data.pkl`, `constants.pkl`, `version`, `code/...`, `data/N`). The check reads the end of
//! central directory record (and its ZIP64 form), walks the central directory and refuses
//! anything a well-formed archive would not hold: too many entries, declared sizes past the
//! limits or past the file, entries that overlap the directory, names that are absolute, climb
//! with `..` or hold control characters, duplicate names, unknown compression, and archives
//! without the entries every TorchScript file has. It reads only the directory and each entry's
//! local header signature, never an entry's contents.

use std::collections::HashSet;

/// What an archive may hold.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveLimits {
    pub max_entries: u64,
    /// Sum of the entries' uncompressed sizes.
    pub max_total_bytes: u64,
    /// Uncompressed size over compressed size of a deflated entry.
    pub max_ratio: u64,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        Self {
            max_entries: 65_536,
            max_total_bytes: 16 << 30,
            max_ratio: 200,
        }
    }
}

/// What the check found in an acceptable archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    pub entries: u64,
    pub total_bytes: u64,
    /// The one top folder every entry lives in.
    pub folder: String,
}

/// Random access to the bytes of a file being checked.
pub trait ReadAt {
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` from `offset`; false when the range is past the end or cannot be read.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> bool;
}

impl ReadAt for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> bool {
        let Ok(start) = usize::try_from(offset) else {
            return false;
        };
        match start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
        {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }
}

impl ReadAt for std::fs::File {
    fn len(&self) -> u64 {
        self.metadata().map_or(0, |m| m.len())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> bool {
        use std::os::unix::fs::FileExt;
        // Past the end it fails (UnexpectedEof): no need to ask the file's length each time.
        self.read_exact_at(buf, offset).is_ok()
    }
}

const EOCD: u32 = 0x0605_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const ZIP64_EOCD: u32 = 0x0606_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const LOCAL: u32 = 0x0403_4b50;
const EOCD_LEN: u64 = 22;
const CENTRAL_LEN: usize = 46;
const LOCAL_LEN: u64 = 30;

fn u16_at(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn u32_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes(
        b[at..at + 4].try_into().expect("4 bytes"),
    ))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Where the central directory is and how many entries it declares.
struct Directory {
    entries: u64,
    offset: u64,
    size: u64,
    /// Where the records after the directory start (ZIP64 record or end record).
    end: u64,
}

/// Checks a TorchScript archive; the error says what is wrong in words a user can act on.
pub fn check_archive(
    file: &(impl ReadAt + ?Sized),
    limits: &ArchiveLimits,
) -> Result<ArchiveSummary, String> {
    let len = file.len();
    let mut magic = [0u8; 4];
    if !file.read_at(0, &mut magic) || magic != LOCAL.to_le_bytes() {
        return Err("not a TorchScript archive (a TorchScript file is a zip archive)".to_owned());
    }
    let directory = find_directory(file, len)?;
    if directory.entries == 0 {
        return Err("the archive has no entries".to_owned());
    }
    if directory.entries > limits.max_entries {
        return Err(format!(
            "the archive declares {} entries, more than the {} allowed",
            directory.entries, limits.max_entries
        ));
    }
    let directory_end = directory
        .offset
        .checked_add(directory.size)
        .filter(|&end| end <= directory.end)
        .ok_or("the central directory lies past the end of the file")?;

    let mut names = HashSet::new();
    let mut folder: Option<String> = None;
    let mut total = 0u64;
    let mut at = directory.offset;
    for index in 0..directory.entries {
        let entry = read_entry(file, at, directory_end, index)?;
        at = entry.next;
        check_name(&entry.name, index)?;
        let top = entry.name.split('/').next().unwrap_or_default().to_owned();
        match &folder {
            None => folder = Some(top),
            Some(f) if *f == top => {}
            Some(f) => {
                return Err(format!(
                    "entry {index} ({:?}) is outside the archive's one folder {f:?}",
                    entry.name
                ))
            }
        }
        if !names.insert(entry.name.clone()) {
            return Err(format!(
                "entry {index}: the name {:?} appears twice",
                entry.name
            ));
        }
        match entry.method {
            0 if entry.compressed != entry.uncompressed => {
                return Err(format!(
                    "entry {index} ({:?}) is stored but declares {} bytes compressed and {} \
                     uncompressed",
                    entry.name, entry.compressed, entry.uncompressed
                ))
            }
            0 => {}
            8 if entry.uncompressed > entry.compressed.max(1).saturating_mul(limits.max_ratio) => {
                return Err(format!(
                    "entry {index} ({:?}) would inflate {} bytes to {}, more than {}x",
                    entry.name, entry.compressed, entry.uncompressed, limits.max_ratio
                ))
            }
            8 => {}
            method => {
                return Err(format!(
                    "entry {index} ({:?}) uses compression method {method}; only stored (0) and \
                     deflated (8) entries are read",
                    entry.name
                ))
            }
        }
        total = total.saturating_add(entry.uncompressed);
        if total > limits.max_total_bytes {
            return Err(format!(
                "the archive's entries declare more than {} bytes uncompressed",
                limits.max_total_bytes
            ));
        }
        check_local_header(file, &entry, directory.offset, index)?;
    }
    if at != directory_end {
        return Err("the central directory's size does not match its entries".to_owned());
    }

    let folder = folder.unwrap_or_default();
    for required in ["data.pkl", "version"] {
        let wanted = format!("{folder}/{required}");
        if !names.contains(&wanted) {
            return Err(format!(
                "not a TorchScript archive: it has no {wanted:?} entry"
            ));
        }
    }
    Ok(ArchiveSummary {
        entries: directory.entries,
        total_bytes: total,
        folder,
    })
}

fn find_directory(file: &(impl ReadAt + ?Sized), len: u64) -> Result<Directory, String> {
    if len < EOCD_LEN {
        return Err("the file is too short to be a zip archive".to_owned());
    }
    // The end record sits in the last 22 bytes plus at most a 65535-byte comment.
    let window = len.min(EOCD_LEN + 0xFFFF);
    let start = len - window;
    let mut tail = vec![0u8; window as usize];
    if !file.read_at(start, &mut tail) {
        return Err("the file cannot be read".to_owned());
    }
    let position = (0..=tail.len() - EOCD_LEN as usize)
        .rev()
        .find(|&i| {
            u32_at(&tail, i) == u64::from(EOCD)
                && i as u64 + EOCD_LEN + u16_at(&tail, i + 20) == window
        })
        .ok_or("no zip end-of-directory record: the file is not a whole zip archive")?;
    let record = &tail[position..position + EOCD_LEN as usize];
    let eocd_at = start + position as u64;
    if u16_at(record, 4) != 0 || u16_at(record, 6) != 0 {
        return Err("multi-part zip archives are not accepted".to_owned());
    }
    let mut directory = Directory {
        entries: u16_at(record, 10),
        size: u32_at(record, 12),
        offset: u32_at(record, 16),
        end: eocd_at,
    };
    let zip64 = directory.entries == 0xFFFF
        || directory.size == 0xFFFF_FFFF
        || directory.offset == 0xFFFF_FFFF;
    let mut locator = [0u8; 20];
    let has_locator = eocd_at >= 20
        && file.read_at(eocd_at - 20, &mut locator)
        && u32_at(&locator, 0) == u64::from(ZIP64_LOCATOR);
    if has_locator {
        let record_at = u64_at(&locator, 8);
        let mut record = [0u8; 56];
        if record_at
            .checked_add(56)
            .is_none_or(|end| end > eocd_at - 20)
            || !file.read_at(record_at, &mut record)
            || u32_at(&record, 0) != u64::from(ZIP64_EOCD)
        {
            return Err("the ZIP64 end-of-directory record is missing or misplaced".to_owned());
        }
        if u32_at(&record, 16) != 0 || u32_at(&record, 20) != 0 {
            return Err("multi-part zip archives are not accepted".to_owned());
        }
        directory = Directory {
            entries: u64_at(&record, 32),
            size: u64_at(&record, 40),
            offset: u64_at(&record, 48),
            end: record_at,
        };
    } else if zip64 {
        return Err("the archive needs a ZIP64 end-of-directory record and has none".to_owned());
    }
    Ok(directory)
}

struct Entry {
    name: String,
    method: u64,
    compressed: u64,
    uncompressed: u64,
    local_offset: u64,
    /// Where the next central directory entry starts.
    next: u64,
}

fn read_entry(
    file: &(impl ReadAt + ?Sized),
    at: u64,
    directory_end: u64,
    index: u64,
) -> Result<Entry, String> {
    let past_end = || format!("entry {index}: the central directory ends in the middle of it");
    let mut fixed = [0u8; CENTRAL_LEN];
    if at + CENTRAL_LEN as u64 > directory_end || !file.read_at(at, &mut fixed) {
        return Err(past_end());
    }
    if u32_at(&fixed, 0) != u64::from(CENTRAL) {
        return Err(format!("entry {index}: bad central directory signature"));
    }
    let (name_len, extra_len, comment_len) =
        (u16_at(&fixed, 28), u16_at(&fixed, 30), u16_at(&fixed, 32));
    let next = at + CENTRAL_LEN as u64 + name_len + extra_len + comment_len;
    if next > directory_end {
        return Err(past_end());
    }
    let mut variable = vec![0u8; (name_len + extra_len) as usize];
    if !file.read_at(at + CENTRAL_LEN as u64, &mut variable) {
        return Err(past_end());
    }
    let (name, extra) = variable.split_at(name_len as usize);
    let name = String::from_utf8(name.to_vec())
        .map_err(|_| format!("entry {index}: the name is not UTF-8"))?;
    let mut entry = Entry {
        name,
        method: u16_at(&fixed, 10),
        compressed: u32_at(&fixed, 20),
        uncompressed: u32_at(&fixed, 24),
        local_offset: u32_at(&fixed, 42),
        next,
    };
    if u16_at(&fixed, 34) != 0 && u16_at(&fixed, 34) != 0xFFFF {
        return Err(format!(
            "entry {index}: multi-part zip archives are not accepted"
        ));
    }
    apply_zip64_extra(&mut entry, extra, index)?;
    Ok(entry)
}

/// Replaces the 32-bit sizes and offset marked 0xFFFFFFFF with the ZIP64 extra field's values.
fn apply_zip64_extra(entry: &mut Entry, mut extra: &[u8], index: u64) -> Result<(), String> {
    let wants = [
        entry.uncompressed == 0xFFFF_FFFF,
        entry.compressed == 0xFFFF_FFFF,
        entry.local_offset == 0xFFFF_FFFF,
    ];
    if !wants.contains(&true) {
        return Ok(());
    }
    while extra.len() >= 4 {
        let (id, size) = (u16_at(extra, 0), u16_at(extra, 2) as usize);
        let Some(body) = extra.get(4..4 + size) else {
            break;
        };
        if id == 1 {
            let mut values = body.chunks_exact(8).map(|c| u64_at(c, 0));
            let mut next = || {
                values
                    .next()
                    .ok_or_else(|| format!("entry {index}: the ZIP64 extra field is too short"))
            };
            if wants[0] {
                entry.uncompressed = next()?;
            }
            if wants[1] {
                entry.compressed = next()?;
            }
            if wants[2] {
                entry.local_offset = next()?;
            }
            return Ok(());
        }
        extra = &extra[4 + size..];
    }
    Err(format!(
        "entry {index}: declares ZIP64 sizes without a ZIP64 extra field"
    ))
}

/// An entry's name: relative, no `..`, no empty or control characters, no backslashes.
fn check_name(name: &str, index: u64) -> Result<(), String> {
    let bad = |rule: &str| Err(format!("entry {index} ({name:?}): {rule}"));
    if name.is_empty() {
        return bad("the name is empty");
    }
    if name.starts_with('/') || name.as_bytes().get(1) == Some(&b':') {
        return bad("absolute names are not accepted");
    }
    if name.contains('\\') {
        return bad("backslashes are not accepted in names");
    }
    if name.chars().any(char::is_control) {
        return bad("control characters are not accepted in names");
    }
    if name.split('/').any(|part| part == "..") {
        return bad("names may not climb with \"..\"");
    }
    Ok(())
}

/// The entry's local header must be where the directory says, with its data before the
/// directory.
fn check_local_header(
    file: &(impl ReadAt + ?Sized),
    entry: &Entry,
    directory_offset: u64,
    index: u64,
) -> Result<(), String> {
    let mut header = [0u8; LOCAL_LEN as usize];
    if !file.read_at(entry.local_offset, &mut header) || u32_at(&header, 0) != u64::from(LOCAL) {
        return Err(format!(
            "entry {index} ({:?}): no local header at offset {}",
            entry.name, entry.local_offset
        ));
    }
    let data_end = (entry.local_offset + LOCAL_LEN + u16_at(&header, 26) + u16_at(&header, 28))
        .checked_add(entry.compressed);
    if data_end.is_none_or(|end| end > directory_offset) {
        return Err(format!(
            "entry {index} ({:?}) declares {} bytes at offset {} that run into the central \
             directory",
            entry.name, entry.compressed, entry.local_offset
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("models")
                .join(name),
        )
        .unwrap()
    }

    /// A stored-entries zip archive of the given names and contents, as a zip writer would
    /// write it.
    pub(crate) fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data) in entries {
            let offset = out.len() as u32;
            let mut local = Vec::new();
            local.extend(LOCAL.to_le_bytes());
            local.extend([20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            local.extend(0u32.to_le_bytes()); // crc, unchecked here
            local.extend((data.len() as u32).to_le_bytes());
            local.extend((data.len() as u32).to_le_bytes());
            local.extend((name.len() as u16).to_le_bytes());
            local.extend(0u16.to_le_bytes());
            local.extend(name.as_bytes());
            out.extend(&local);
            out.extend(*data);
            central.extend(CENTRAL.to_le_bytes());
            central.extend([20, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            central.extend(0u32.to_le_bytes());
            central.extend((data.len() as u32).to_le_bytes());
            central.extend((data.len() as u32).to_le_bytes());
            central.extend((name.len() as u16).to_le_bytes());
            central.extend([0u8; 12]);
            central.extend(offset.to_le_bytes());
            central.extend(name.as_bytes());
        }
        let directory_offset = out.len() as u32;
        out.extend(&central);
        out.extend(EOCD.to_le_bytes());
        out.extend([0u8; 4]);
        out.extend((entries.len() as u16).to_le_bytes());
        out.extend((entries.len() as u16).to_le_bytes());
        out.extend((central.len() as u32).to_le_bytes());
        out.extend(directory_offset.to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out
    }

    fn minimal(extra: &[(&str, &[u8])]) -> Vec<u8> {
        let mut entries: Vec<(&str, &[u8])> = vec![("m/data.pkl", b"x"), ("m/version", b"3")];
        entries.extend_from_slice(extra);
        zip(&entries)
    }

    #[test]
    fn every_shipped_model_passes() {
        for name in [
            "digits_cnn.pt",
            "digits_cnn_at.pt",
            "digits_parity.pt",
            "digits_value.pt",
            "cifar_resnet.pt",
        ] {
            let summary = check_archive(shipped(name).as_slice(), &ArchiveLimits::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(summary.entries > 3, "{name}: {summary:?}");
        }
    }

    #[test]
    fn a_minimal_archive_passes_and_the_entries_it_needs_are_named() {
        let limits = ArchiveLimits::default();
        let summary = check_archive(minimal(&[]).as_slice(), &limits).unwrap();
        assert_eq!(summary.folder, "m");
        let err = check_archive(zip(&[("m/data.pkl", b"x")]).as_slice(), &limits).unwrap_err();
        assert!(err.contains("no \"m/version\" entry"), "{err}");
    }

    #[test]
    fn hostile_names_are_refused() {
        let limits = ArchiveLimits::default();
        for (name, rule) in [
            ("/etc/passwd", "absolute"),
            ("m/../../x", "climb"),
            ("m\\x", "backslashes"),
            ("m/a\nb", "control"),
            ("other/x", "outside the archive's one folder"),
            ("m/data.pkl", "appears twice"),
        ] {
            let err = check_archive(minimal(&[(name, b"y")]).as_slice(), &limits).unwrap_err();
            assert!(err.contains(rule), "{name:?}: {err}");
        }
    }

    #[test]
    fn declared_sizes_past_the_limits_or_the_file_are_refused() {
        let file = minimal(&[]);
        let few = ArchiveLimits {
            max_entries: 1,
            ..Default::default()
        };
        let err = check_archive(file.as_slice(), &few).unwrap_err();
        assert!(
            err.contains("declares 2 entries, more than the 1 allowed"),
            "{err}"
        );

        // Claim a huge size for the first entry in the central directory.
        let mut big = file.clone();
        let directory = u32_at(&big, big.len() - 6) as usize;
        big[directory + 20..directory + 24].copy_from_slice(&u32::MAX.to_le_bytes());
        big[directory + 24..directory + 28].copy_from_slice(&(u32::MAX - 1).to_le_bytes());
        let err = check_archive(big.as_slice(), &ArchiveLimits::default()).unwrap_err();
        assert!(err.contains("ZIP64") || err.contains("run into"), "{err}");

        let mut lying = file.clone();
        lying[directory + 20..directory + 24].copy_from_slice(&1000u32.to_le_bytes());
        lying[directory + 24..directory + 28].copy_from_slice(&1000u32.to_le_bytes());
        let err = check_archive(lying.as_slice(), &ArchiveLimits::default()).unwrap_err();
        assert!(err.contains("run into the central directory"), "{err}");
    }

    #[test]
    fn truncated_and_foreign_files_are_refused() {
        let limits = ArchiveLimits::default();
        let file = minimal(&[]);
        for cut in [0, 3, 10, file.len() / 2, file.len() - 1] {
            assert!(
                check_archive(&file[..cut], &limits).is_err(),
                "cut at {cut}"
            );
        }
        let err = check_archive(b"definitely not a zip".as_slice(), &limits).unwrap_err();
        assert!(err.contains("not a TorchScript archive"), "{err}");
    }
}
