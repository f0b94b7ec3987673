//! Pulls one image into a layer store, as the agent does, and prints a JSON summary
//! (layers, bytes, seconds, peak RSS). For benchmarks and by-hand checks:
//!
//! ```text
//! pull [--insecure HOST:PORT]... [--key PRIVATE.pem]... [--kbs-resource URI=FILE]...
//!      [--jobs N] --store DIR IMAGE
//! ```
//!
//! `--key` and `--kbs-resource` are the explicit test mode: keys from local files.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;

use cocoon_image_pull::registry::{OciRegistry, RegistriesConf, RegistryOptions};
use cocoon_image_pull::{DecryptionKey, ImagePuller, LayerStore, PullOptions, StaticKeys};
use zeroize::Zeroizing;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pull: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut conf, mut keys, mut resources) = (String::new(), Vec::new(), HashMap::new());
    let (mut store, mut image, mut jobs) = (None, None, 3usize);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--insecure" => conf.push_str(&format!(
                "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
                value()?
            )),
            "--key" => keys.push(DecryptionKey::from_pem_or_der(&std::fs::read(value()?)?)?),
            "--kbs-resource" => {
                let v = value()?;
                let (uri, file) = v.split_once('=').ok_or("--kbs-resource URI=FILE")?;
                resources.insert(uri.to_owned(), Zeroizing::new(std::fs::read(file)?));
            }
            "--jobs" => jobs = value()?.parse()?,
            "--store" => store = Some(value()?),
            _ if image.is_none() && !a.starts_with('-') => image = Some(a.clone()),
            _ => return Err(format!("unexpected argument {a}").into()),
        }
    }
    let (store, image) = (store.ok_or("--store DIR")?, image.ok_or("IMAGE")?);
    let registry = OciRegistry::new(RegistryOptions {
        registries: RegistriesConf::parse(&conf)?,
        ..Default::default()
    })?;
    let puller = ImagePuller::new(
        Arc::new(registry),
        Arc::new(StaticKeys { resources, keys }),
        Arc::new(LayerStore::open(store.as_ref())?),
        PullOptions {
            max_concurrent_layers: jobs,
            ..Default::default()
        },
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let img = rt.block_on(puller.pull(&image))?;
    let status = std::fs::read_to_string("/proc/self/status")?;
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let summary = serde_json::json!({
        "image": img.image,
        "manifest_digest": img.manifest_digest,
        "layers": img.layers,
        "fetched": img.stats.fetched,
        "blob_bytes": img.stats.blob_bytes,
        "tar_bytes": img.stats.tar_bytes,
        "seconds": img.stats.elapsed.as_secs_f64(),
        "peak_rss_kib": hwm_kib,
    });
    println!("{summary}");
    Ok(())
}
