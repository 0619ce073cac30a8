use std::collections::{BTreeSet, HashMap};

use probe_core::{
    CgroupSnapshot, GpuDevice, GpuPerf, GpuSnapshot, GpuState, MigDevice, ProcessGpuMemory,
    ProcessSample, Snapshot,
};

use super::*;

/// A sample in which every figure has a value: a throttled GPU with MIG instances and GPM
/// figures, an agent holding GPU memory, a container with a limit.
pub fn every_figure_sample() -> Snapshot {
    let mut host = crate::test_fixtures::host_snapshot();
    host.cpu_utilization_ratio = Some(0.25);
    let perf = GpuPerf {
        interval_seconds: 1.0,
        sm_active_ratio: Some(0.6),
        sm_occupancy_ratio: Some(0.5),
        tensor_active_ratio: Some(0.4),
        tensor_hmma_active_ratio: Some(0.3),
        dram_bandwidth_ratio: Some(0.2),
        fp16_active_ratio: Some(0.1),
        fp32_active_ratio: Some(0.05),
        pcie_tx_bytes_per_second: Some(1e9),
        pcie_rx_bytes_per_second: Some(2e9),
        nvlink_tx_bytes_per_second: Some(3e9),
        nvlink_rx_bytes_per_second: Some(4e9),
    };
    let gpu = GpuDevice {
        index: 0,
        uuid: Some("GPU-0".into()),
        name: Some("H100".into()),
        state: GpuState::Ok,
        memory_total_bytes: Some(80 << 30),
        memory_used_bytes: Some(60 << 30),
        memory_free_bytes: Some(20 << 30),
        utilization_ratio: Some(0.9),
        memory_utilization_ratio: Some(0.4),
        temperature_celsius: Some(70.0),
        power_watts: Some(500.0),
        memory_reserved_bytes: None,
        power_limit_watts: Some(700.0),
        clock_sm_mhz: Some(1980),
        clock_memory_mhz: Some(2619),
        performance_state: Some(0),
        clock_event_reasons: Some(0x4),
        ecc_corrected_errors: Some(3),
        ecc_uncorrected_errors: Some(0),
        processes: vec![],
        unsupported: vec![],
        mig_enabled: Some(true),
        mig_devices: vec![MigDevice {
            index: 0,
            uuid: Some("MIG-0".into()),
            memory_total_bytes: Some(10 << 30),
            memory_used_bytes: Some(1 << 30),
            memory_free_bytes: Some(9 << 30),
        }],
        perf: Some(perf),
    };
    Snapshot {
        taken_at_ns: 1_700_000_000_000_000_000,
        host,
        gpu: GpuSnapshot {
            available: true,
            unavailable_reason: None,
            devices: vec![gpu],
        },
        cgroup: Some(CgroupSnapshot {
            version: 2,
            memory_limit_bytes: Some(8 << 30),
            memory_used_bytes: Some(2 << 30),
            cpu_quota_cores: Some(2.0),
            cpu_throttled_ns: Some(5_000_000_000),
        }),
        processes: vec![ProcessSample {
            pid: 42,
            process_count: 1,
            rss_bytes: 1 << 30,
            cpu_ratio: Some(0.5),
            gpu_memory_bytes: Some(4 << 30),
            gpus: vec![ProcessGpuMemory {
                gpu_index: 0,
                used_memory_bytes: 4 << 30,
            }],
            tree: vec![42],
        }],
    }
}

#[test]
fn every_sample_figure_has_a_value_in_a_full_sample() {
    let sample = every_figure_sample();
    let clients = HashMap::from([(42, "planner".to_owned())]);
    for figure in from_samples() {
        assert!(
            !figure.points(&sample, &clients).is_empty(),
            "{} has no point in a sample that has everything",
            figure.prometheus
        );
    }
}

#[test]
fn names_are_unique_and_every_figure_left_out_of_otlp_says_why() {
    let mut prometheus = BTreeSet::new();
    let mut otlp = BTreeSet::new();
    for f in table() {
        assert!(prometheus.insert(f.prometheus), "{} twice", f.prometheus);
        assert!(!f.help.is_empty(), "{} has no help", f.prometheus);
        match f.otlp {
            Otlp::Name(name) => {
                assert!(otlp.insert(name), "{name} twice");
                // A figure that follows a convention carries the convention's name.
                if let Some(convention) = f.convention {
                    assert_eq!(convention, name);
                }
            }
            Otlp::Not(why) => assert!(why.len() > 10, "{}: say why", f.prometheus),
        }
    }
}

#[test]
fn the_otlp_export_and_a_scrape_carry_the_same_figures_but_those_the_table_excepts() {
    let sample = every_figure_sample();
    let request = crate::export::metrics::request(std::slice::from_ref(&sample), &[]);
    let exported: BTreeSet<String> = request.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .map(|m| m.name.clone())
        .collect();
    let want: BTreeSet<String> = exported_as_otlp().map(|(n, _)| n.to_owned()).collect();
    assert_eq!(exported, want);
    // The ones a scrape has and the export does not are exactly those with a reason.
    let excepted: Vec<&str> = from_samples()
        .filter(|f| matches!(f.otlp, Otlp::Not(_)))
        .map(|f| f.prometheus)
        .collect();
    assert_eq!(excepted, ["runlens_sample_timestamp"]);
    // A counter goes out as a monotonic sum, a gauge as a gauge, each with the table's unit.
    for m in &request.resource_metrics[0].scope_metrics[0].metrics {
        let (_, figure) = exported_as_otlp().find(|(n, _)| *n == m.name).unwrap();
        assert_eq!(m.unit, figure.unit.ucum(), "{}", m.name);
        use opentelemetry_proto::tonic::metrics::v1::metric::Data;
        match (&m.data, figure.kind) {
            (Some(Data::Sum(sum)), Kind::Counter) => assert!(sum.is_monotonic),
            (Some(Data::Gauge(_)), Kind::Gauge) => {}
            other => panic!("{}: {other:?}", m.name),
        }
    }
}

#[test]
fn gpu_points_name_the_gpu_on_both_sides_the_way_each_expects() {
    let sample = every_figure_sample();
    let used = table()
        .iter()
        .find(|f| f.prometheus == "hw_gpu_memory_usage")
        .unwrap();
    let points = used.points(&sample, &HashMap::new());
    assert_eq!(
        points[0].labels(),
        [
            ("hw_id", "GPU-0".to_owned()),
            ("gpu", "0".to_owned()),
            ("hw_model", "H100".to_owned())
        ]
    );
    let otlp: Vec<(&str, &str)> = points[0].otlp_attributes().collect();
    assert_eq!(
        otlp,
        [
            ("hw.id", "GPU-0"),
            ("gpu", "0"),
            ("hw.model", "H100"),
            ("hw.type", "gpu"),
            ("hw.vendor", "nvidia")
        ]
    );
    assert_eq!(points[0].value, (60u64 << 30) as f64);
}

#[test]
fn exposed_names_carry_the_unit_and_total_suffixes() {
    let name = |p: &str| {
        table()
            .iter()
            .find(|f| f.prometheus == p)
            .unwrap()
            .exposed()
    };
    assert_eq!(name("hw_gpu_memory_usage"), "hw_gpu_memory_usage_bytes");
    assert_eq!(name("hw_errors"), "hw_errors_total");
    assert_eq!(
        name("container_cpu_throttled"),
        "container_cpu_throttled_seconds_total"
    );
    assert_eq!(name("target"), "target_info");
    assert_eq!(
        name("runlens_parquet_export_last_success_timestamp"),
        "runlens_parquet_export_last_success_timestamp_seconds"
    );
}

/// The book's chapter between these markers is [`markdown`]'s output; run with
/// `RUNLENS_UPDATE_DOCS=1` to rewrite it after changing the table.
#[test]
fn the_book_shows_this_table() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/src/figures.md");
    let book = std::fs::read_to_string(&path).unwrap();
    let (begin, end) = ("<!-- figures:begin -->\n", "<!-- figures:end -->");
    let (Some(a), Some(b)) = (book.find(begin), book.find(end)) else {
        panic!("{} lacks the figures markers", path.display());
    };
    let table = markdown();
    let shown = &book[a + begin.len()..b];
    if shown != table && std::env::var_os("RUNLENS_UPDATE_DOCS").is_some() {
        let updated = format!("{}{table}{}", &book[..a + begin.len()], &book[b..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert_eq!(
        shown, table,
        "docs/src/figures.md is out of date: run RUNLENS_UPDATE_DOCS=1 cargo test -p \
         runlens-sidecar figures"
    );
}
