//! Tars built byte by byte for the unpack tests: headers are written raw with the `tar`
//! crate's low-level header API, bypassing the builder's checks, so hostile names get through.

#![allow(clippy::unwrap_used, dead_code)] // test helpers; each test file uses a part

use tar::{EntryType, Header};

/// A hostile tar under construction: headers are written raw, bypassing the builder's checks.
#[derive(Default)]
pub struct RawTar(pub Vec<u8>);

impl RawTar {
    pub fn entry(
        mut self,
        path: &str,
        kind: EntryType,
        mode: u32,
        data: &[u8],
        link: Option<&str>,
    ) -> Self {
        let mut h = Header::new_gnu();
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(link) = link {
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.push(h.as_bytes(), data);
        self
    }
    pub fn file(self, path: &str, data: &[u8]) -> Self {
        self.entry(path, EntryType::Regular, 0o644, data, None)
    }
    pub fn push(&mut self, header: &[u8], data: &[u8]) {
        self.0.extend_from_slice(header);
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
    }
    pub fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }
}

/// One PAX extended-header record, `"<len> <key>=<value>\n"`, its length counting itself.
pub fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

impl RawTar {
    /// An entry whose real path is in a PAX header, its ustar name a harmless stand-in.
    pub fn pax_entry(mut self, path: &str, kind: EntryType, data: &[u8]) -> Self {
        let records = pax_record("path", path);
        let mut pax = Header::new_ustar();
        pax.set_path("PaxHeaders/x").unwrap();
        pax.set_entry_type(EntryType::XHeader);
        pax.set_mode(0o644);
        pax.set_size(records.len() as u64);
        pax.set_cksum();
        self.push(pax.as_bytes(), &records);
        self.entry("stand-in", kind, 0o644, data, None)
    }
}
