//! Export metadata: a file with valid-looking codes, scales and zero points for one tensor
//! `w`, whose `moq` metadata JSON is the fuzzer's input. `MoqFile::load` either refuses it or
//! gives tensors that agree with their packed layout (and dequantize without a panic).
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use moq_core::export::MoqFile;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary folder"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(meta) = std::str::from_utf8(data) else {
        return;
    };
    // 64 words, 8 scales, 8 zero points: enough for many small shapes and widths.
    let codes: Vec<u8> = (0..64u32)
        .flat_map(|i| (i.wrapping_mul(0x9E37_79B9)).to_le_bytes())
        .collect();
    let scales: Vec<u8> = (0..8)
        .flat_map(|i| (0.01f32 * i as f32).to_le_bytes())
        .collect();
    let zero_points: Vec<u8> = (0..8i32).flat_map(|i| (i - 4).to_le_bytes()).collect();
    let views = [
        (
            "w.codes",
            TensorView::new(Dtype::U32, vec![64], &codes).unwrap(),
        ),
        (
            "w.scales",
            TensorView::new(Dtype::F32, vec![8], &scales).unwrap(),
        ),
        (
            "w.zero_points",
            TensorView::new(Dtype::I32, vec![8], &zero_points).unwrap(),
        ),
    ];
    let info = HashMap::from([("moq".to_string(), meta.to_string())]);
    let bytes = safetensors::serialize(views, Some(info)).expect("serializes");
    let path = dir().path().join("export.safetensors");
    std::fs::write(&path, bytes).expect("write the input");
    if let Ok(file) = MoqFile::load(&path) {
        for e in &file.quantized {
            e.packed.check().expect("a loaded tensor is consistent");
            let q = moq_core::unpack(&e.packed).expect("and unpacks");
            let mut out = vec![0f32; e.packed.len];
            moq_core::dequantize(&q, &mut out).expect("and dequantizes");
        }
    }
});
