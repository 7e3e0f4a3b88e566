//! The safetensors readers on any file: `TensorFile` (what `moq quantize` reads) and
//! `MoqFile::load` (`moq inspect`, `load_dequantized`). Either gives an error or a file whose
//! every tensor reads back at its stated size; an export that loads saves and loads unchanged.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use moq_core::export::MoqFile;
use moq_core::input::TensorFile;

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary folder"))
}

fuzz_target!(|data: &[u8]| {
    let path = dir().path().join("input.safetensors");
    std::fs::write(&path, data).expect("write the input");
    if let Ok(file) = TensorFile::open(&path) {
        let mut total = 0u64;
        for e in file.entries() {
            let bytes = file.read(e).expect("a checked tensor reads");
            assert_eq!(bytes.len(), e.bytes);
            total += e.bytes as u64;
        }
        assert!(total <= data.len() as u64);
    }
    if let Ok(export) = MoqFile::load(&path) {
        let copy = dir().path().join("copy.safetensors");
        export.save(&copy).expect("a loaded export saves");
        assert_eq!(MoqFile::load(&copy).expect("and loads"), export);
    }
});
