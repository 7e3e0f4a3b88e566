//! The DeepSpeed config parser: any bytes either parse or give an error (never a panic), and a
//! config that parses writes back to JSON that parses to the same config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moq_core::QuantizeConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = QuantizeConfig::from_json_str(text) {
        let back = config.to_config_json();
        let again = QuantizeConfig::from_json_value(&back).expect("a written config parses");
        assert_eq!(again, config, "a config survives writing and reading");
    }
});
