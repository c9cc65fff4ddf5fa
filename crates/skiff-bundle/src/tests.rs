use std::collections::BTreeMap;
use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use super::*;
use crate::confine::clean_name;

/// The 8 bytes the manifest validator reads: `\0asm`, version 0x0d, layer 1 (a component).
fn component() -> Vec<u8> {
    let mut bytes = b"\0asm\x0d\x00\x01\x00".to_vec();
    bytes.extend_from_slice(b"stand-in code");
    bytes
}

fn put(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// Every folder (as `None`) and file (with its bytes) under `dir`, by relative path.
fn tree(dir: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let kind = entry.file_type().unwrap();
            assert!(!kind.is_symlink(), "{rel} is a symlink");
            if kind.is_dir() {
                out.insert(rel.clone(), None);
                walk(&entry.path(), &rel, out);
            } else {
                out.insert(rel, Some(fs::read(entry.path()).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, "", &mut out);
    out
}

/// A temporary folder holding only `dest`, so a test can see that nothing landed beside it.
struct Scene {
    outer: tempfile::TempDir,
    dest: PathBuf,
}

impl Scene {
    fn new() -> Self {
        let outer = tempfile::tempdir().unwrap();
        let dest = outer.path().join("dest");
        fs::create_dir(&dest).unwrap();
        Scene { outer, dest }
    }

    fn unpack(&self, bytes: &[u8]) -> Result<Unpacked, BundleError> {
        self.unpack_with(bytes, &BundleLimits::default())
    }

    fn unpack_with(&self, bytes: &[u8], limits: &BundleLimits) -> Result<Unpacked, BundleError> {
        unpack(bytes, &self.dest, limits)
    }

    /// Asserts that the outer folder holds `dest` and nothing else.
    fn assert_contained(&self) {
        let names: Vec<String> = fs::read_dir(self.outer.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["dest"], "something was written outside dest");
    }
}

enum Kind<'a> {
    File(&'a [u8]),
    Dir,
    Symlink(&'a str),
    HardLink(&'a str),
    Fifo,
}

/// A plain tar with names written straight into the headers, so that names the `tar`
/// builder would refuse (`../evil`, `/abs`) can be made.
fn raw_tar(entries: &[(&str, Kind)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, kind) in entries {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_mode(0o4755);
        header.set_mtime(0);
        let data: &[u8] = match kind {
            Kind::File(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                data
            }
            Kind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                &[]
            }
            Kind::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_link_name_literal(target).unwrap();
                &[]
            }
            Kind::HardLink(target) => {
                header.set_entry_type(tar::EntryType::Link);
                header.set_link_name_literal(target).unwrap();
                &[]
            }
            Kind::Fifo => {
                header.set_entry_type(tar::EntryType::Fifo);
                &[]
            }
        };
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn zip_of(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o4755);
    for (name, data) in entries {
        match data {
            Some(data) => {
                zip.start_file(*name, options).unwrap();
                zip.write_all(data).unwrap();
            }
            None => zip.add_directory(*name, options).unwrap(),
        }
    }
    zip.finish().unwrap().into_inner()
}

const MANIFEST_TEXT: &[u8] = b"[app]\nname = \"demo\"\n";

/// An app folder with referenced and unreferenced files.
fn app_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    put(
        &d.join("skiff.toml"),
        br#"[app]
name = "demo"

[component.web]
source = "web.wasm"
route = "/..."
files = ["static", { source = "config/app.json", destination = "/etc/app.json" }]

[component.api]
source = "./web.wasm"
route = "/api/..."
files = [{ source = "static/css", destination = "/css" }]

[upstream.orders]
url = "https://orders.internal"
route = "/orders/..."
tls = { ca = "certs/ca.pem" }
"#,
    );
    put(&d.join("web.wasm"), &component());
    put(&d.join("certs/ca.pem"), b"-----BEGIN CERTIFICATE-----\n");
    put(&d.join("certs/ca-key.pem"), b"never packed");
    put(&d.join("static/index.html"), b"<h1>hi</h1>");
    put(&d.join("static/css/site.css"), b"body {}");
    put(&d.join("static/deep/er/still.txt"), b"deep");
    fs::create_dir_all(d.join("static/empty")).unwrap();
    put(&d.join("config/app.json"), b"{}");
    // Not referenced: must stay home.
    put(&d.join("config/secret.txt"), b"hunter2");
    put(&d.join("target/debug/huge.bin"), &[7; 4096]);
    put(&d.join("notes.txt"), b"todo");
    dir
}

#[test]
fn a_packed_app_unpacks_to_the_referenced_files_only() {
    let app = app_folder();
    let packed = pack(&app.path().join("skiff.toml")).unwrap();
    assert_eq!(&packed.bytes[..2], &[0x1f, 0x8b], "a tar.gz");
    // Stored once though referenced twice: web.wasm, static/css.
    assert_eq!(packed.files, 7, "{packed:?}");

    let scene = Scene::new();
    let unpacked = scene.unpack(&packed.bytes).unwrap();
    assert_eq!(unpacked.files, packed.files);
    assert_eq!(unpacked.unpacked_bytes, packed.unpacked_bytes);
    assert_eq!(unpacked.manifest_path, scene.dest.join("skiff.toml"));

    let got = tree(&scene.dest);
    let original = tree(app.path());
    let expected: Vec<&str> = vec![
        "certs",
        "certs/ca.pem",
        "config",
        "config/app.json",
        "skiff.toml",
        "static",
        "static/css",
        "static/css/site.css",
        "static/deep",
        "static/deep/er",
        "static/deep/er/still.txt",
        "static/empty",
        "static/index.html",
        "web.wasm",
    ];
    assert_eq!(got.keys().map(String::as_str).collect::<Vec<_>>(), expected);
    for (rel, content) in &got {
        assert_eq!(Some(content), original.get(rel), "{rel} differs");
    }
    assert_eq!(
        packed.unpacked_bytes,
        got.values().flatten().map(|b| b.len() as u64).sum::<u64>()
    );

    // The server's view: the unpacked manifest loads, and everything is inside.
    let loaded = skiff_manifest::load(&unpacked.manifest_path).unwrap();
    confine(&loaded, &scene.dest).unwrap();
    scene.assert_contained();

    // Same folder, same bytes.
    let again = pack(&app.path().join("skiff.toml")).unwrap();
    assert_eq!(packed.bytes, again.bytes);
}

#[test]
fn the_parts_of_a_plan_unpack_to_what_the_whole_bundle_does() {
    let app = app_folder();
    let plan = plan(&app.path().join("skiff.toml")).unwrap();
    let parts = plan.parts().unwrap();
    let kinds: Vec<&PartKind> = parts.iter().map(|p| &p.kind).collect();
    assert_eq!(
        kinds,
        [
            &PartKind::Manifest,
            &PartKind::Component("web".into()),
            &PartKind::Files {
                component: "web".into(),
                guest: "/static".into()
            },
            &PartKind::Files {
                component: "web".into(),
                guest: "/etc/app.json".into()
            },
            &PartKind::UpstreamCa("orders".into()),
        ],
        "`api` shares web.wasm and its mount lies inside `static`: no parts of its own"
    );
    assert!(matches!(&parts[1].content, PartContent::File { path, .. } if path == "web.wasm"));
    assert!(matches!(&parts[2].content, PartContent::Archive(_)));
    assert!(matches!(&parts[4].content, PartContent::File { path, .. } if path == "certs/ca.pem"));

    let whole = Scene::new();
    whole.unpack(&plan.pack().unwrap().bytes).unwrap();
    let in_parts = Scene::new();
    let limits = BundleLimits::default();
    let mut unpacker = Unpacker::new(&in_parts.dest, &limits).unwrap();
    for part in &parts {
        match &part.content {
            PartContent::File { path, bytes } => unpacker.file(path, bytes).unwrap(),
            PartContent::Archive(bytes) => unpacker.archive(bytes).unwrap(),
        }
    }
    let unpacked = unpacker.finish().unwrap();
    assert_eq!(tree(&in_parts.dest), tree(&whole.dest));
    assert_eq!(unpacked.files, 7);

    // The same folder gives the same parts, byte for byte (a registry then stores none twice).
    let again = super::plan(&app.path().join("skiff.toml"))
        .unwrap()
        .parts()
        .unwrap();
    for (a, b) in parts.iter().zip(&again) {
        match (&a.content, &b.content) {
            (PartContent::File { bytes: x, .. }, PartContent::File { bytes: y, .. })
            | (PartContent::Archive(x), PartContent::Archive(y)) => assert_eq!(x, y),
            _ => panic!("{a:?} and {b:?} differ in kind"),
        }
    }
}

#[test]
fn hostile_parts_are_refused_across_the_whole_bundle() {
    let limits = BundleLimits::new(64, 10);
    // A name that climbs out, given as a single file's path.
    let scene = Scene::new();
    let mut unpacker = Unpacker::new(&scene.dest, &limits).unwrap();
    assert_unsafe(
        unpacker.file("../escape", b"x").unwrap_err(),
        "../escape",
        "..",
    );
    scene.assert_contained();
    // The same name in two parts.
    let scene = Scene::new();
    let mut unpacker = Unpacker::new(&scene.dest, &limits).unwrap();
    unpacker.file("skiff.toml", MANIFEST_TEXT).unwrap();
    let again = gzip(&raw_tar(&[("skiff.toml", Kind::File(b"[app]"))]));
    assert!(matches!(
        unpacker.archive(&again).unwrap_err(),
        BundleError::Duplicate { entry } if entry == "skiff.toml"
    ));
    // The size limit counts every part together.
    let scene = Scene::new();
    let mut unpacker = Unpacker::new(&scene.dest, &limits).unwrap();
    unpacker.file("a", &[1; 40]).unwrap();
    assert!(matches!(
        unpacker.file("b", &[1; 40]).unwrap_err(),
        BundleError::TooLarge { limit: 64 }
    ));
    // No manifest in any part.
    let scene = Scene::new();
    let mut unpacker = Unpacker::new(&scene.dest, &limits).unwrap();
    unpacker.file("web.wasm", &component()).unwrap();
    assert!(matches!(
        unpacker.finish().unwrap_err(),
        BundleError::NoManifest
    ));
}

#[test]
fn a_manifest_under_another_name_is_stored_as_skiff_toml() {
    let dir = tempfile::tempdir().unwrap();
    put(
        &dir.path().join("prod.toml"),
        b"[app]\nname = \"demo\"\n\n[component.web]\nsource = \"web.wasm\"\n",
    );
    put(&dir.path().join("web.wasm"), &component());
    let packed = pack(&dir.path().join("prod.toml")).unwrap();
    let scene = Scene::new();
    scene.unpack(&packed.bytes).unwrap();
    let names: Vec<String> = tree(&scene.dest).into_keys().collect();
    assert_eq!(names, ["skiff.toml", "web.wasm"]);
}

#[test]
fn packed_paths_resolve_the_same_on_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Longer than the 100 bytes a plain tar header holds.
    let long = format!("{}/{}", "a".repeat(60), "b".repeat(60));
    put(&d.join(&long).join("file.txt"), b"long");
    put(&d.join("web.wasm"), &component());
    put(&d.join("sub/unreferenced.txt"), b"stays home");
    let manifest = d.join("skiff.toml");
    put(
        &manifest,
        format!(
            "[app]\nname = \"demo\"\n\n[component.web]\nsource = \"sub/../web.wasm\"\n\
             files = [{{ source = \"{long}\", destination = \"/long\" }}]\n"
        )
        .as_bytes(),
    );
    let packed = pack(&manifest).unwrap();
    let scene = Scene::new();
    scene.unpack(&packed.bytes).unwrap();
    // `sub` is there (empty), so `sub/../web.wasm` resolves.
    assert_eq!(tree(&scene.dest).get("sub"), Some(&None));
    assert!(!scene.dest.join("sub/unreferenced.txt").exists());
    assert_eq!(
        fs::read(scene.dest.join(&long).join("file.txt")).unwrap(),
        b"long"
    );
    let app = skiff_manifest::load(&scene.dest.join("skiff.toml")).unwrap();
    confine(&app, &scene.dest).unwrap();

    // An absolute path would name a folder the server does not have.
    put(
        &manifest,
        format!(
            "[app]\nname = \"demo\"\n\n[component.web]\nsource = {:?}\n",
            d.join("web.wasm").to_str().unwrap()
        )
        .as_bytes(),
    );
    let err = pack(&manifest).unwrap_err();
    assert!(matches!(err, BundleError::CannotPack { .. }), "{err:?}");
    assert!(err.to_string().contains("relative"), "{err}");
}

#[test]
fn pack_refuses_a_source_outside_the_app_folder() {
    let outer = tempfile::tempdir().unwrap();
    put(&outer.path().join("x.wasm"), &component());
    let app = outer.path().join("app");
    put(
        &app.join("skiff.toml"),
        b"[app]\nname = \"demo\"\n\n[component.web]\nsource = \"../x.wasm\"\n",
    );
    let err = pack(&app.join("skiff.toml")).unwrap_err();
    assert!(matches!(err, BundleError::Outside { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("component `web` source"), "{message}");
    assert!(message.contains("`../x.wasm`"), "{message}");
    assert!(message.contains("move or copy it"), "{message}");
}

#[test]
fn pack_refuses_a_mount_of_the_parent_folder() {
    let outer = tempfile::tempdir().unwrap();
    let app = outer.path().join("app");
    put(&app.join("web.wasm"), &component());
    put(
        &app.join("skiff.toml"),
        b"[app]\nname = \"demo\"\n\n[component.web]\nsource = \"web.wasm\"\n\
          files = [{ source = \"..\", destination = \"/up\" }]\n",
    );
    let err = pack(&app.join("skiff.toml")).unwrap_err();
    assert!(matches!(err, BundleError::Outside { .. }), "{err:?}");
    assert!(err.to_string().contains("files mount `/up`"), "{err}");
}

#[cfg(unix)]
#[test]
fn pack_refuses_a_symlink_out_of_a_mounted_folder_and_follows_one_inside() {
    let outer = tempfile::tempdir().unwrap();
    put(&outer.path().join("secret"), b"hunter2");
    let app = outer.path().join("app");
    put(&app.join("web.wasm"), &component());
    put(
        &app.join("skiff.toml"),
        b"[app]\nname = \"demo\"\n\n[component.web]\nsource = \"web.wasm\"\nfiles = [\"static\"]\n",
    );
    put(&app.join("static/a.txt"), b"a");
    std::os::unix::fs::symlink("../web.wasm", app.join("static/code.wasm")).unwrap();

    // A link to a file inside is stored as that file.
    let packed = pack(&app.join("skiff.toml")).unwrap();
    let scene = Scene::new();
    scene.unpack(&packed.bytes).unwrap();
    assert_eq!(
        fs::read(scene.dest.join("static/code.wasm")).unwrap(),
        component()
    );

    std::os::unix::fs::symlink(outer.path().join("secret"), app.join("static/leak")).unwrap();
    let err = pack(&app.join("skiff.toml")).unwrap_err();
    assert!(matches!(err, BundleError::Outside { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("static/leak"), "{message}");
    assert!(message.contains("symlink"), "{message}");

    // A link to its own folder would never end.
    fs::remove_file(app.join("static/leak")).unwrap();
    std::os::unix::fs::symlink(".", app.join("static/again")).unwrap();
    let err = pack(&app.join("skiff.toml")).unwrap_err();
    assert!(matches!(err, BundleError::CannotPack { .. }), "{err:?}");
}

#[test]
fn pack_returns_the_manifest_report_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("skiff.toml");
    put(
        &path,
        b"[app]\nname = \"demo\"\n\n[component.web]\nsource = \"missing.wasm\"\n",
    );
    let report = skiff_manifest::load(&path).unwrap_err().to_string();
    let err = pack(&path).unwrap_err();
    assert!(matches!(err, BundleError::Manifest(_)), "{err:?}");
    assert_eq!(err.to_string(), report);
}

#[test]
fn plain_tar_and_zip_unpack_with_fixed_modes() {
    let entries = [
        ("skiff.toml", Kind::File(MANIFEST_TEXT)),
        ("static/", Kind::Dir),
        ("static/a/b.txt", Kind::File(b"b")),
    ];
    let tar = raw_tar(&entries);
    let zip = zip_of(&[
        ("skiff.toml", Some(MANIFEST_TEXT)),
        ("static/", None),
        ("static/a/b.txt", Some(b"b")),
    ]);
    for bytes in [tar.clone(), gzip(&tar), zip] {
        let scene = Scene::new();
        let unpacked = scene.unpack(&bytes).unwrap();
        assert_eq!(unpacked.files, 2);
        assert_eq!(unpacked.unpacked_bytes, MANIFEST_TEXT.len() as u64 + 1);
        assert_eq!(fs::read(scene.dest.join("static/a/b.txt")).unwrap(), b"b");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &str| {
                fs::metadata(scene.dest.join(p))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o7777
            };
            assert_eq!(mode("skiff.toml"), 0o644);
            assert_eq!(mode("static/a/b.txt"), 0o644);
            assert_eq!(mode("static"), 0o755);
            assert_eq!(mode("static/a"), 0o755);
        }
        scene.assert_contained();
    }
}

#[test]
fn a_tar_without_magic_is_still_a_tar() {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_old();
    header.set_path("skiff.toml").unwrap();
    header.set_size(MANIFEST_TEXT.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, MANIFEST_TEXT).unwrap();
    let bytes = builder.into_inner().unwrap();
    assert_ne!(&bytes[257..262], b"ustar");
    let scene = Scene::new();
    scene.unpack(&bytes).unwrap();
}

fn assert_unsafe(err: BundleError, entry: &str, reason: &str) {
    match &err {
        BundleError::UnsafeEntry {
            entry: e,
            reason: r,
        } => {
            assert_eq!(e, entry, "{err}");
            assert!(r.to_string().contains(reason), "{err}");
        }
        _ => panic!("expected UnsafeEntry for {entry}, got {err:?}"),
    }
}

#[test]
fn unpack_refuses_names_that_climb_out() {
    for name in ["../evil", "a/../../evil", "a/b/../../../evil", "./../evil"] {
        let scene = Scene::new();
        let bytes = raw_tar(&[
            ("skiff.toml", Kind::File(MANIFEST_TEXT)),
            (name, Kind::File(b"evil")),
        ]);
        let err = scene.unpack(&gzip(&bytes)).unwrap_err();
        assert_unsafe(err, name, "`..`");
        scene.assert_contained();
    }
}

#[test]
fn unpack_refuses_absolute_names() {
    let scene = Scene::new();
    let target = scene.outer.path().join("abs");
    let name = target.to_str().unwrap();
    let err = scene
        .unpack(&raw_tar(&[(name, Kind::File(b"evil"))]))
        .unwrap_err();
    assert_unsafe(err, name, "absolute");
    assert!(!target.exists());
    scene.assert_contained();
}

#[test]
fn unpack_refuses_windows_path_tricks() {
    for (name, reason) in [
        ("C:/evil", "drive"),
        ("c:evil", "drive"),
        ("a\\..\\..\\evil", "backslash"),
        ("\\\\server\\share\\evil", "backslash"),
    ] {
        let scene = Scene::new();
        let err = scene.unpack(&zip_of(&[(name, Some(b"evil"))])).unwrap_err();
        assert_unsafe(err, name, reason);
        assert_eq!(tree(&scene.dest).len(), 0);
        scene.assert_contained();
    }
    assert!(clean_name("").is_err());
    assert_eq!(clean_name("./a//b/").unwrap(), "a/b");
    assert_eq!(clean_name("./").unwrap(), "");
}

#[test]
fn unpack_refuses_links_and_special_files_naming_the_entry() {
    let cases = [
        ("link", Kind::Symlink("/etc"), "symbolic link (to `/etc`)"),
        ("hard", Kind::HardLink("skiff.toml"), "hard link"),
        ("pipe", Kind::Fifo, "FIFO"),
    ];
    for (name, kind, reason) in cases {
        let scene = Scene::new();
        let bytes = raw_tar(&[
            ("skiff.toml", Kind::File(MANIFEST_TEXT)),
            (name, kind),
            // Were the link made, this would be written through it.
            ("link/passwd", Kind::File(b"evil")),
        ]);
        let err = scene.unpack(&gzip(&bytes)).unwrap_err();
        assert_unsafe(err, name, reason);
        assert!(fs::symlink_metadata(scene.dest.join(name)).is_err());
        scene.assert_contained();
    }

    let scene = Scene::new();
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    zip.add_symlink("link", "/etc", options).unwrap();
    let bytes = zip.finish().unwrap().into_inner();
    assert_unsafe(scene.unpack(&bytes).unwrap_err(), "link", "symbolic link");
    assert!(fs::symlink_metadata(scene.dest.join("link")).is_err());
}

#[test]
fn unpack_refuses_zip_names_that_climb_out() {
    let scene = Scene::new();
    let bytes = zip_of(&[
        ("skiff.toml", Some(MANIFEST_TEXT)),
        ("../evil", Some(b"evil")),
    ]);
    assert_unsafe(scene.unpack(&bytes).unwrap_err(), "../evil", "`..`");
    scene.assert_contained();
}

#[test]
fn unpack_stops_at_the_byte_limit() {
    let limits = BundleLimits {
        max_unpacked_bytes: 1000,
        ..BundleLimits::default()
    };
    let big = vec![b'x'; 1001];
    let tar = raw_tar(&[
        ("skiff.toml", Kind::File(MANIFEST_TEXT)),
        ("big", Kind::File(&big)),
    ]);
    let zip = zip_of(&[("skiff.toml", Some(MANIFEST_TEXT)), ("big", Some(&big))]);
    for bytes in [gzip(&tar), zip] {
        let scene = Scene::new();
        let err = scene.unpack_with(&bytes, &limits).unwrap_err();
        assert!(
            matches!(err, BundleError::TooLarge { limit: 1000 }),
            "{err:?}"
        );
        assert!(err.to_string().contains("1000 B"), "{err}");
        assert!(!scene.dest.join("big").exists());
        scene.assert_contained();
    }

    // Exactly at the limit is fine.
    let exact = vec![b'x'; 1000 - MANIFEST_TEXT.len()];
    let bytes = raw_tar(&[
        ("skiff.toml", Kind::File(MANIFEST_TEXT)),
        ("big", Kind::File(&exact)),
    ]);
    Scene::new().unpack_with(&bytes, &limits).unwrap();
}

/// A zip whose directory says a file is 10 bytes while it inflates to 100,000: the bytes
/// written are what count.
#[test]
fn unpack_counts_bytes_written_not_bytes_declared() {
    let real = vec![0u8; 100_000];
    let mut bytes = zip_of(&[("skiff.toml", Some(MANIFEST_TEXT)), ("bomb", Some(&real))]);
    let size = (real.len() as u32).to_le_bytes();
    let mut patched = 0;
    // The uncompressed size sits at offset 22 of a local header and 24 of a central one.
    for (signature, offset) in [(b"PK\x03\x04", 22), (b"PK\x01\x02", 24)] {
        let mut at = 0;
        while let Some(i) = bytes[at..].windows(4).position(|w| w == signature) {
            let start = at + i;
            if bytes[start + offset..start + offset + 4] == size {
                bytes[start + offset..start + offset + 4].copy_from_slice(&10u32.to_le_bytes());
                patched += 1;
            }
            at = start + 4;
        }
    }
    assert_eq!(patched, 2, "both headers patched");
    let limits = BundleLimits {
        max_unpacked_bytes: 1000,
        ..BundleLimits::default()
    };
    let scene = Scene::new();
    let err = scene.unpack_with(&bytes, &limits).unwrap_err();
    assert!(matches!(err, BundleError::TooLarge { .. }), "{err:?}");
    let written = fs::metadata(scene.dest.join("bomb")).map_or(0, |m| m.len());
    assert!(written <= 1000, "wrote {written} bytes");
    scene.assert_contained();
}

/// A GNU long name is read into memory whole by the tar reader; a huge one is refused
/// before it is.
#[test]
fn unpack_refuses_a_huge_long_name() {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    header.set_entry_type(tar::EntryType::GNULongName);
    let name = vec![b'a'; 2 << 20];
    header.set_size(name.len() as u64);
    header.set_cksum();
    builder.append(&header, name.as_slice()).unwrap();
    let mut bytes = builder.into_inner().unwrap();
    bytes.extend(raw_tar(&[("skiff.toml", Kind::File(MANIFEST_TEXT))]));
    let scene = Scene::new();
    let err = scene.unpack(&gzip(&bytes)).unwrap_err();
    match &err {
        BundleError::Corrupt(m) => assert!(m.contains("larger than 1 MiB"), "{err}"),
        _ => panic!("{err:?}"),
    }
    scene.assert_contained();
}

#[test]
fn unpack_stops_at_the_entry_limit() {
    let limits = BundleLimits {
        max_entries: 5,
        ..BundleLimits::default()
    };
    let names: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
    let mut entries = vec![("skiff.toml", Kind::File(MANIFEST_TEXT))];
    entries.extend(names.iter().map(|n| (n.as_str(), Kind::File(b"x"))));
    let tar = raw_tar(&entries);
    let mut zip_entries = vec![("skiff.toml", Some(MANIFEST_TEXT))];
    zip_entries.extend(names.iter().map(|n| (n.as_str(), Some(&b"x"[..]))));
    let zip = zip_of(&zip_entries);
    for bytes in [gzip(&tar), zip] {
        let scene = Scene::new();
        let err = scene.unpack_with(&bytes, &limits).unwrap_err();
        assert!(
            matches!(err, BundleError::TooManyEntries { limit: 5 }),
            "{err:?}"
        );
        assert!(tree(&scene.dest).len() <= 5);
        scene.assert_contained();
    }
}

#[test]
fn a_zip_claiming_too_many_entries_is_refused_before_its_directory_is_read() {
    let zip = zip_of(&[("skiff.toml", Some(MANIFEST_TEXT))]);
    let end = zip.len() - 22;
    assert_eq!(&zip[end..end + 4], b"PK\x05\x06");
    // The end record claims 60,000 entries.
    let mut claimed = zip.clone();
    claimed[end + 8..end + 12].copy_from_slice(&[0x60, 0xea, 0x60, 0xea]);
    // A zip64 end record (and its locator) claims a trillion; the end record defers to it.
    let mut zip64 = zip[..end].to_vec();
    let record_at = zip64.len() as u64;
    zip64.extend_from_slice(b"PK\x06\x06");
    zip64.extend_from_slice(&44u64.to_le_bytes());
    zip64.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    zip64.extend_from_slice(&1_000_000_000_000u64.to_le_bytes());
    zip64.extend_from_slice(&1_000_000_000_000u64.to_le_bytes());
    zip64.extend_from_slice(&zip[end + 12..end + 16]);
    zip64.extend_from_slice(&[0; 4]);
    zip64.extend_from_slice(&zip[end + 16..end + 20]);
    zip64.extend_from_slice(&[0; 4]);
    zip64.extend_from_slice(b"PK\x06\x07");
    zip64.extend_from_slice(&[0; 4]);
    zip64.extend_from_slice(&record_at.to_le_bytes());
    zip64.extend_from_slice(&1u32.to_le_bytes());
    let mut end_record = zip[end..].to_vec();
    end_record[8..12].copy_from_slice(&[0xff; 4]);
    zip64.extend_from_slice(&end_record);
    for bytes in [claimed, zip64] {
        let scene = Scene::new();
        let err = scene.unpack(&bytes).unwrap_err();
        assert!(matches!(err, BundleError::TooManyEntries { .. }), "{err:?}");
        assert!(tree(&scene.dest).is_empty());
    }
}

#[test]
fn unpack_refuses_unknown_bytes() {
    for bytes in [&b"just some text"[..], &[], &[0u8; 1024]] {
        let scene = Scene::new();
        let err = scene.unpack(bytes).unwrap_err();
        assert!(matches!(err, BundleError::UnknownFormat), "{err:?}");
        assert!(err.to_string().contains("tar, tar.gz or zip"), "{err}");
    }
    // Looks like gzip, but is not.
    let scene = Scene::new();
    let err = scene.unpack(b"\x1f\x8bnot really").unwrap_err();
    assert!(matches!(err, BundleError::Corrupt(_)), "{err:?}");
}

#[test]
fn unpack_requires_skiff_toml_at_the_root() {
    let nested = raw_tar(&[("app/skiff.toml", Kind::File(MANIFEST_TEXT))]);
    let folder = raw_tar(&[("skiff.toml/", Kind::Dir)]);
    let empty_zip = zip_of(&[]);
    assert!(empty_zip.starts_with(b"PK\x05\x06"));
    for bytes in [nested, folder, empty_zip] {
        let scene = Scene::new();
        let err = scene.unpack(&bytes).unwrap_err();
        assert!(matches!(err, BundleError::NoManifest), "{err:?}");
        assert!(
            err.to_string().contains("no skiff.toml at its root"),
            "{err}"
        );
    }
}

#[test]
fn unpack_refuses_duplicates() {
    for second in ["a.txt", "./a.txt", "a.txt/"] {
        let scene = Scene::new();
        let kind = if second.ends_with('/') {
            Kind::Dir
        } else {
            Kind::File(b"second")
        };
        let bytes = raw_tar(&[
            ("skiff.toml", Kind::File(MANIFEST_TEXT)),
            ("a.txt", Kind::File(b"first")),
            (second, kind),
        ]);
        let err = scene.unpack(&bytes).unwrap_err();
        assert!(
            matches!(&err, BundleError::Duplicate { entry } if entry == "a.txt"),
            "{err:?}"
        );
        assert_eq!(fs::read(scene.dest.join("a.txt")).unwrap(), b"first");
    }

    // A file where a folder was, and the other way round.
    let scene = Scene::new();
    let bytes = raw_tar(&[("a/b", Kind::File(b"b")), ("a", Kind::File(b"a"))]);
    assert_unsafe(scene.unpack(&bytes).unwrap_err(), "a", "folder");
    let scene = Scene::new();
    let bytes = raw_tar(&[("a", Kind::File(b"a")), ("a/b", Kind::File(b"b"))]);
    assert_unsafe(scene.unpack(&bytes).unwrap_err(), "a", "file");

    // The zip reader folds a repeated name into one entry; the end record still counts two.
    let mut bytes = zip_of(&[
        ("skiff.toml", Some(MANIFEST_TEXT)),
        ("a.txt", Some(b"a")),
        ("b.txt", Some(b"b")),
    ]);
    let at: Vec<usize> = bytes
        .windows(5)
        .enumerate()
        .filter(|(_, w)| w == b"b.txt")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 2, "in the local and the central header");
    for i in at {
        bytes[i..i + 5].copy_from_slice(b"a.txt");
    }
    let scene = Scene::new();
    let err = scene.unpack(&bytes).unwrap_err();
    assert!(
        matches!(err, BundleError::Corrupt(ref m) if m.contains("more than once")),
        "{err:?}"
    );
}

#[test]
fn unpack_wants_an_empty_destination() {
    let scene = Scene::new();
    put(&scene.dest.join("old"), b"old");
    let bytes = raw_tar(&[("skiff.toml", Kind::File(MANIFEST_TEXT))]);
    let err = scene.unpack(&bytes).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
}

#[test]
fn confine_refuses_paths_outside_the_bundle() {
    let outer = tempfile::tempdir().unwrap();
    let elsewhere = outer.path().join("elsewhere.wasm");
    put(&elsewhere, &component());
    let root = outer.path().join("bundle");
    put(&root.join("web.wasm"), &component());
    let manifest = root.join("skiff.toml");

    // An absolute source: valid as a manifest, since the file exists on this machine.
    put(
        &manifest,
        format!(
            "[app]\nname = \"demo\"\n\n[component.web]\nsource = {:?}\n",
            elsewhere.to_str().unwrap()
        )
        .as_bytes(),
    );
    let app = skiff_manifest::load(&manifest).unwrap();
    let message = confine(&app, &root).unwrap_err().to_string();
    assert!(message.contains("component.web.source"), "{message}");
    assert!(message.contains("elsewhere.wasm"), "{message}");

    // A mount of the folder above.
    put(
        &manifest,
        b"[app]\nname = \"demo\"\n\n[component.web]\nsource = \"web.wasm\"\n\
          files = [{ source = \"..\", destination = \"/up\" }]\n",
    );
    let app = skiff_manifest::load(&manifest).unwrap();
    let message = confine(&app, &root).unwrap_err().to_string();
    assert!(message.contains("component.web.files[0]"), "{message}");
    assert!(message.contains("`..`"), "{message}");
    assert!(
        !message.contains(root.to_str().unwrap()),
        "no server paths: {message}"
    );

    // Inside is fine.
    put(
        &manifest,
        b"[app]\nname = \"demo\"\n\n[component.web]\nsource = \"web.wasm\"\n\
          files = [{ source = \".\", destination = \"/app\" }]\n",
    );
    let app = skiff_manifest::load(&manifest).unwrap();
    confine(&app, &root).unwrap();

    // An upstream's CA file above the bundle (the server's own files, say).
    put(&outer.path().join("server-key.pem"), b"secret\n");
    put(&root.join("ca.pem"), b"ours\n");
    let upstream = |ca: &str| {
        format!(
            "[app]\nname = \"demo\"\n\n[upstream.orders]\nurl = \"https://orders\"\n\
             route = \"/o/...\"\ntls = {{ ca = {ca:?} }}\n"
        )
    };
    put(&manifest, upstream("../server-key.pem").as_bytes());
    let app = skiff_manifest::load(&manifest).unwrap();
    let message = confine(&app, &root).unwrap_err().to_string();
    assert!(message.contains("upstream.orders.tls.ca"), "{message}");
    assert!(message.contains("server-key.pem"), "{message}");
    put(&manifest, upstream("ca.pem").as_bytes());
    let app = skiff_manifest::load(&manifest).unwrap();
    confine(&app, &root).unwrap();
}
