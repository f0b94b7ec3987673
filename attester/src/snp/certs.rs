//! The GHCB certificate table that comes with an extended SNP report (from the
//! `SNP_GET_EXT_REPORT` certificate buffer or the configfs-tsm `auxblob`).
//!
//! Layout: entries of `{ GUID (16 bytes, canonical order), offset: u32, length: u32 }`,
//! little-endian, ended by an all-zero entry; offsets count from the start of the table.

use sev::firmware::host::{CertTableEntry, CertType};
use uuid::Uuid;
use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::abi;
use crate::error::Error;

#[repr(C)]
#[derive(Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
struct RawEntry {
    guid: [u8; 16],
    offset: U32,
    length: U32,
}

const _: () = assert!(std::mem::size_of::<RawEntry>() == abi::SNP_CERT_TABLE_ENTRY_LEN);

fn bad(detail: String) -> Error {
    Error::SnpCertTable { detail }
}

/// Parse a certificate table into `sev`'s entries (the type Trustee deserialises), in table
/// order. An empty table (first entry all zero) gives an empty vector.
pub fn parse_cert_table(table: &[u8]) -> Result<Vec<CertTableEntry>, Error> {
    let mut entries = Vec::new();
    let mut at = 0usize;
    loop {
        let rest = table.get(at..).unwrap_or_default();
        let (raw, _) = RawEntry::ref_from_prefix(rest)
            .map_err(|_| bad(format!("no terminating entry before byte {}", table.len())))?;
        if raw.guid == [0u8; 16] {
            return Ok(entries);
        }
        let offset = raw.offset.get() as usize;
        let length = raw.length.get() as usize;
        let data = offset
            .checked_add(length)
            .and_then(|end| table.get(offset..end))
            .ok_or_else(|| {
                bad(format!(
                    "entry {} points at {offset}+{length}, outside the {}-byte table",
                    entries.len(),
                    table.len()
                ))
            })?;
        let guid = Uuid::from_bytes(raw.guid);
        let entry = CertTableEntry::from_guid(&guid, data.to_vec())
            .map_err(|e| bad(format!("entry {}: {e}", entries.len())))?;
        entries.push(entry);
        at += abi::SNP_CERT_TABLE_ENTRY_LEN;
    }
}

/// The GUID of a certificate type, as it appears in the table.
pub fn cert_type_guid(cert_type: &CertType) -> Result<Uuid, Error> {
    Uuid::try_from(cert_type.clone()).map_err(|e| bad(format!("{cert_type:?}: {e}")))
}

/// Build a certificate table from entries: the inverse of [`parse_cert_table`]. What a host
/// puts in the buffer; used by tests and by tools that assemble evidence offline.
pub fn build_cert_table(entries: &[CertTableEntry]) -> Result<Vec<u8>, Error> {
    let header_len = (entries.len() + 1) * abi::SNP_CERT_TABLE_ENTRY_LEN;
    let mut table = vec![0u8; header_len];
    let mut data = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let offset = u32::try_from(header_len + data.len())
            .map_err(|_| bad("table larger than 4 GiB".into()))?;
        let length =
            u32::try_from(entry.data.len()).map_err(|_| bad("entry larger than 4 GiB".into()))?;
        let raw = RawEntry {
            guid: *cert_type_guid(&entry.cert_type)?.as_bytes(),
            offset: U32::new(offset),
            length: U32::new(length),
        };
        let at = i * abi::SNP_CERT_TABLE_ENTRY_LEN;
        table
            .get_mut(at..at + abi::SNP_CERT_TABLE_ENTRY_LEN)
            .ok_or_else(|| bad("table header shorter than its entries".into()))?
            .copy_from_slice(raw.as_bytes());
        data.extend_from_slice(&entry.data);
    }
    table.extend_from_slice(&data);
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_guids() {
        let entries = vec![
            CertTableEntry::new(CertType::VCEK, vec![1, 2, 3]),
            CertTableEntry::new(CertType::ASK, vec![4; 10]),
            CertTableEntry::new(CertType::ARK, vec![5; 7]),
        ];
        let table = build_cert_table(&entries).unwrap();
        // VCEK GUID 63da758d-... in canonical byte order at the start.
        assert_eq!(&table[..4], &[0x63, 0xda, 0x75, 0x8d]);
        assert_eq!(parse_cert_table(&table).unwrap(), entries);
    }

    #[test]
    fn sev_guids_are_the_ghcb_ones() {
        use crate::abi::snp_cert_guid as g;
        for (t, guid) in [
            (CertType::ARK, g::ARK),
            (CertType::ASK, g::ASK),
            (CertType::VCEK, g::VCEK),
            (CertType::VLEK, g::VLEK),
            (CertType::CRL, g::CRL),
        ] {
            assert_eq!(cert_type_guid(&t).unwrap().to_string(), guid);
        }
    }

    #[test]
    fn empty_table_is_empty() {
        assert!(parse_cert_table(&[0u8; 4096]).unwrap().is_empty());
    }

    #[test]
    fn out_of_bounds_entry_is_an_error() {
        let mut table =
            build_cert_table(&[CertTableEntry::new(CertType::VCEK, vec![9; 4])]).unwrap();
        table[20] = 0xff; // length of entry 0
        let err = parse_cert_table(&table).unwrap_err().to_string();
        assert!(err.contains("outside"), "{err}");
    }

    #[test]
    fn missing_terminator_is_an_error() {
        // One well-formed entry (zero-length data at offset 0) and nothing after it.
        let mut table = vec![0u8; 24];
        table[..16].copy_from_slice(cert_type_guid(&CertType::VCEK).unwrap().as_bytes());
        let err = parse_cert_table(&table).unwrap_err().to_string();
        assert!(err.contains("terminating"), "{err}");
    }
}
