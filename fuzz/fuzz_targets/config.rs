//! The DeepSpeed config parser: any bytes either parse or give an error (never a panic), a
//! config that parses writes back to JSON that parses to the same config, and its schedule
//! (with its deadline, where it has one) builds, plans and steps without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use moq_core::{QuantizeConfig, Schedule, plan};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = QuantizeConfig::from_json_str(text) {
        let back = config.to_config_json();
        let again = QuantizeConfig::from_json_value(&back).expect("a written config parses");
        assert_eq!(again, config, "a config survives writing and reading");
        for layers in [1, 3] {
            let Ok(mut schedule) = Schedule::new(&config, layers) else {
                continue;
            };
            let horizon = config.deadline.map_or(2_000, |d| d.saturating_add(2).min(2_000));
            let planned = plan(&schedule, horizon);
            assert_eq!(planned.layers.len(), layers);
            let _ = schedule.set_eigenvalues(&vec![0.5; layers]);
            for _ in 0..horizon.min(200) {
                let report = schedule.step();
                for d in &report.drops {
                    assert!(d.to < d.from, "a drop lowers the width");
                }
            }
        }
    }
});
