//! Unpacks one unencrypted layer blob: `unpack_layer <blob> <media-type> <diff_id> <dest>`.
//! For timing the pipeline against `gzip -dc` (peak RSS is printed).

use std::process::ExitCode;

use cocoon_image_pull::{unpack_layer, LayerDescriptor, NoKeys, UnpackOptions};
use sha2::Digest as _;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, blob, media_type, diff_id, dest] = args.as_slice() else {
        eprintln!("usage: unpack_layer <blob> <media-type> <diff_id> <dest>");
        return ExitCode::FAILURE;
    };
    let run = || -> Result<(), Box<dyn std::error::Error>> {
        let mut h = sha2::Sha256::new();
        std::io::copy(&mut std::fs::File::open(blob)?, &mut h)?;
        let desc = LayerDescriptor {
            media_type: media_type.clone(),
            digest: format!("sha256:{}", hex::encode(h.finalize())),
            size: std::fs::metadata(blob)?.len(),
            annotations: Default::default(),
        };
        let t = std::time::Instant::now();
        let stats = unpack_layer(
            &desc,
            diff_id,
            std::fs::File::open(blob)?,
            &NoKeys,
            dest.as_ref(),
            &UnpackOptions::default(),
        )?;
        let status = std::fs::read_to_string("/proc/self/status")?;
        let hwm = status
            .lines()
            .find(|l| l.starts_with("VmHWM"))
            .unwrap_or("VmHWM: ?");
        println!("{stats:?} in {:.2}s; {hwm}", t.elapsed().as_secs_f64());
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
