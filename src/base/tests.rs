use super::*;

#[test]
fn parses_locations_relative_to_the_spec() {
    let here = Path::new("/specs");
    assert_eq!(
        BaseLocation::parse("oci:../base:latest", here),
        BaseLocation::Layout {
            dir: PathBuf::from("/specs/../base"),
            tag: Some("latest".into())
        }
    );
    assert_eq!(
        BaseLocation::parse("oci-archive:/x/base.tar", here),
        BaseLocation::Archive {
            file: PathBuf::from("/x/base.tar"),
            tag: None
        }
    );
    assert_eq!(
        BaseLocation::parse("python:3.12-slim", here),
        BaseLocation::Registry("python:3.12-slim".into())
    );
}

/// A base held in memory: a manifest with one layer and a config.
struct Bytes(std::collections::HashMap<Digest, Vec<u8>>);

impl BlobSource for Bytes {
    fn open(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, BaseError> {
        let b = self.0.get(digest).cloned().ok_or(BaseError::MissingBlob {
            base: "mem".into(),
            digest: digest.clone(),
        })?;
        Ok(Box::new(io::Cursor::new(b)))
    }
    fn name(&self) -> &str {
        "mem"
    }
}

fn open_with_diff_ids(diff_ids: serde_json::Value) -> Result<BaseImage, BaseError> {
    let layer = Digest::of_bytes(b"layer");
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
    .to_string()
    .into_bytes();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::image::MEDIA_TYPE_OCI_MANIFEST,
        "config": {"mediaType": crate::image::MEDIA_TYPE_OCI_CONFIG, "digest": Digest::of_bytes(&config), "size": config.len()},
        "layers": [{"mediaType": crate::layer::MEDIA_TYPE_OCI_LAYER_GZIP, "digest": layer, "size": 5}],
    })
    .to_string()
    .into_bytes();
    let top = Descriptor::new(
        crate::image::MEDIA_TYPE_OCI_MANIFEST,
        Digest::of_bytes(&manifest),
        manifest.len() as u64,
    );
    let src = Bytes(
        [
            (Digest::of_bytes(&config), config),
            (Digest::of_bytes(&manifest), manifest),
        ]
        .into(),
    );
    resolve_descriptor(Arc::new(src), top, &"linux/amd64".parse().unwrap())
}

/// Counts how often each blob is opened.
struct Counting(Bytes, std::sync::Mutex<usize>);

impl BlobSource for Counting {
    fn open(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, BaseError> {
        *self.1.lock().unwrap() += 1;
        self.0.open(digest)
    }
    fn name(&self) -> &str {
        "mem"
    }
}

/// A base whose one gzip layer is `blob`, described as `described`'s
/// digest, with `diff_id` in its config.
fn one_layer_base(blob: Vec<u8>, described: &[u8], diff_id: Digest) -> (BaseImage, Arc<Counting>) {
    let digest = Digest::of_bytes(described);
    let src = Arc::new(Counting(
        Bytes([(digest.clone(), blob)].into()),
        Default::default(),
    ));
    let manifest: Manifest = serde_json::from_value(serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::image::MEDIA_TYPE_OCI_MANIFEST,
        "config": {"mediaType": crate::image::MEDIA_TYPE_OCI_CONFIG, "digest": Digest::of_bytes(b"{}"), "size": 2},
        "layers": [{"mediaType": crate::layer::MEDIA_TYPE_OCI_LAYER_GZIP, "digest": digest, "size": described.len()}],
    }))
    .unwrap();
    let base = BaseImage {
        name: "mem".into(),
        manifest_digest: Digest::of_bytes(b"manifest"),
        manifest,
        config: serde_json::json!({}),
        diff_ids: vec![diff_id],
        platform: "linux/amd64".parse().unwrap(),
        blobs: src.clone(),
        tars: Default::default(),
    };
    (base, src)
}

fn gzipped(data: &[u8]) -> Vec<u8> {
    let mut gz = crate::layer::compress::gzip_writer(Vec::new());
    io::Write::write_all(&mut gz, data).unwrap();
    gz.finish().unwrap()
}

#[test]
fn a_base_layer_is_inflated_once_however_many_readers_walk_it() {
    let tar: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let blob = gzipped(&tar);
    let (base, src) = one_layer_base(blob.clone(), &blob, Digest::of_bytes(&tar));
    for reader in 0..3 {
        // Each reader takes only a little and leaves the rest unread.
        let head = base
            .read_layer_tar(0, |r| {
                let mut head = vec![0; 10];
                r.read_exact(&mut head)?;
                Ok(head)
            })
            .unwrap();
        assert_eq!(head, tar[..10], "reader {reader}");
    }
    let whole = base
        .read_layer_tar(0, |r| {
            let mut all = Vec::new();
            r.read_to_end(&mut all)?;
            Ok(all)
        })
        .unwrap();
    assert_eq!(whole, tar, "the kept tar is the whole layer");
    assert_eq!(*src.1.lock().unwrap(), 1, "the blob was opened once");
}

#[test]
fn a_layer_that_fails_its_digest_is_never_kept_and_fails_every_read() {
    let blob = gzipped(b"some tar bytes");
    // The manifest names other bytes: the read must fail on the digest.
    let (base, src) = one_layer_base(
        blob,
        b"the bytes the manifest names",
        Digest::of_bytes(b"some tar bytes"),
    );
    for _ in 0..2 {
        let err = base
            .read_layer_tar(0, |r| Ok(io::copy(r, &mut io::sink())?))
            .unwrap_err();
        assert!(matches!(err, BaseError::Layer { .. }), "{err:?}");
    }
    assert_eq!(*src.1.lock().unwrap(), 2, "read again, not from a copy");
}

#[test]
fn a_layer_whose_tar_is_not_its_diff_id_fails_every_read_in_one_line_and_is_never_kept() {
    let tar: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let blob = gzipped(&tar);
    let wrong = Digest::of_bytes(b"another layer's tar");
    let (base, src) = one_layer_base(blob.clone(), &blob, wrong.clone());
    type Reader = fn(&mut dyn Read) -> Result<usize, BoxError>;
    let reads: [Reader; 2] = [
        // A reader that stops early: the rest is read to check the diff_id.
        |r| Ok(r.read(&mut [0; 10])?),
        // A reader that fails: the diff_id is what is reported.
        |_| Err("not a tar".into()),
    ];
    for read in reads {
        let err = base.read_layer_tar(0, read).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, BaseError::DiffId { .. }), "{err:?}");
        assert!(!message.contains('\n'), "{message}");
        for part in [
            "base mem: layer ",
            &Digest::of_bytes(&blob).to_string(),
            &format!("its config's diff_id {wrong} does not match"),
            &format!("uncompressed content ({})", Digest::of_bytes(&tar)),
        ] {
            assert!(message.contains(part), "{part:?} in {message}");
        }
    }
    assert_eq!(*src.1.lock().unwrap(), 2, "read again, not from a copy");
}

#[test]
fn a_layer_inflating_past_100_times_its_size_and_1_gib_is_stopped_there() {
    // What a gzip bomb's decoder gives: zeros without end.
    let mut bomb = InflateCap::new(io::repeat(0), 1 << 20);
    let err = io::copy(&mut bomb, &mut io::sink()).unwrap_err();
    assert_eq!(bomb.left, 0, "stopped at the limit, 1 GiB for a 1 MiB blob");
    assert!(
        err.to_string()
            .starts_with("inflates to over 1024 MiB from 1024 KiB, more than any real layer"),
        "{err}"
    );
    // A big layer may inflate to 100 times its size; a real one does.
    let mut big = InflateCap::new(io::repeat(0).take(3 << 30), 40 << 20);
    assert_eq!(io::copy(&mut big, &mut io::sink()).unwrap(), 3 << 30);
}

#[test]
fn an_uncompressed_layer_must_have_its_own_digest_as_diff_id() {
    let tar = b"an uncompressed tar".to_vec();
    let (mut base, _) = one_layer_base(tar.clone(), &tar, Digest::of_bytes(b"other"));
    base.manifest.layers[0].media_type = "application/vnd.oci.image.layer.v1.tar".into();
    let err = base.read_layer_tar(0, |_| Ok(())).unwrap_err();
    assert!(matches!(err, BaseError::DiffId { .. }), "{err:?}");
    base.diff_ids[0] = Digest::of_bytes(&tar);
    let read = base.read_layer_tar(0, |r| {
        let mut all = Vec::new();
        r.read_to_end(&mut all)?;
        Ok(all)
    });
    assert_eq!(read.unwrap(), tar);
}

#[test]
fn base_layers_keep_the_diff_ids_their_config_gives() {
    let diff_id = Digest::of_bytes(b"uncompressed layer");
    let base = open_with_diff_ids(serde_json::json!([diff_id])).unwrap();
    assert_eq!(base.diff_ids, [diff_id]);
    assert_ne!(base.diff_ids[0], Digest::of_bytes(b""));

    let err = open_with_diff_ids(serde_json::json!(["md5:abc"]))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not a sha256 digest"), "{err}");
    let err = open_with_diff_ids(serde_json::json!([]))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("0 diff_ids but the manifest has 1 layers"),
        "{err}"
    );
}
