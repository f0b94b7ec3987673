//! Peak memory does not grow with layer size: a 64 MiB layer, encrypted, streamed
//! from a file, raises the process's peak RSS by far less than its size.
#![allow(clippy::unwrap_used)] // tests: a panic is a failure

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};

use cocoon_image_pull::{spec, unpack_layer, StaticKeys, UnpackOptions};
use common::*;
use sha2::Digest as _;

fn vm_hwm_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let l = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    l.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Pseudo-random but compressible-ish bytes, generated on the fly.
struct Gen(u64, u64);
impl Read for Gen {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.1 as usize);
        for b in &mut buf[..n] {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = b"abcdefgh"[(self.0 >> 61) as usize];
        }
        self.1 -= n as u64;
        Ok(n)
    }
}

/// Hashes what goes through it.
struct Tee<W: Write>(W, sha2::Sha256);
impl<W: Write> Write for Tee<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(b)?;
        self.1.update(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[test]
fn peak_memory_does_not_follow_layer_size() {
    let tmp = tempfile::tempdir().unwrap();
    let gz_path = tmp.path().join("layer.tar.gz");
    let total: u64 = 64 << 20;
    // tar → (diff_id) → gzip → file, all streaming.
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz_path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut tee = Tee(gz, sha2::Sha256::new());
    {
        let mut b = tar::Builder::new(&mut tee);
        for i in 0..3 {
            let mut h = tar::Header::new_gnu();
            h.set_size(total / 3);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            b.append_data(&mut h, format!("big{i}"), Gen(i, total / 3))
                .unwrap();
        }
        b.finish().unwrap();
    }
    let diff_id = format!("sha256:{}", hex::encode(tee.1.finalize()));
    tee.0.finish().unwrap();
    let plain = std::fs::read(&gz_path).unwrap();
    let enc = encrypt_layer(tmp.path(), &plain);
    drop(plain);
    std::fs::write(&gz_path, &enc.blob).unwrap();
    let ann = BTreeMap::from([
        (spec::ANNOTATION_PUBOPTS.to_string(), enc.pubopts.clone()),
        (
            "org.opencontainers.image.enc.keys.provider.attestation-agent".to_string(),
            packet("kbs:///default/key/big", &kek(), &enc.privopts, false),
        ),
    ]);
    let desc = descriptor(
        &format!("{}+encrypted", spec::MEDIA_TYPE_TAR_GZIP),
        &enc.blob,
        ann,
    );
    drop(enc);
    let keys = StaticKeys {
        resources: [(
            "kbs:///default/key/big".to_string(),
            zeroize::Zeroizing::new(kek()),
        )]
        .into(),
        keys: vec![],
    };
    // Drop what the preparation held; the peak so far is the preparation's.
    let before = vm_hwm_kib();
    // Reset the high-water mark where the kernel allows it (Linux ≥ 4.0).
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let base = if reset { vm_hwm_kib() } else { before };
    let out = tmp.path().join("out");
    let stats = unpack_layer(
        &desc,
        &diff_id,
        std::fs::File::open(&gz_path).unwrap(),
        &keys,
        &out,
        &UnpackOptions {
            same_owner: is_root(),
        },
    )
    .unwrap();
    assert_eq!(stats.tar_bytes % 512, 0);
    assert!(stats.tar_bytes >= total);
    let grew = vm_hwm_kib().saturating_sub(base);
    println!(
        "peak RSS grew by {grew} KiB for a {} MiB layer (reset={reset})",
        total >> 20
    );
    assert!(reset, "cannot reset VmHWM here");
    assert!(grew < 16 << 10, "peak RSS grew by {grew} KiB");
    assert_eq!(
        std::fs::metadata(out.join("big2")).unwrap().len(),
        total / 3
    );
}

fn kek() -> Vec<u8> {
    (0u8..32).collect()
}
