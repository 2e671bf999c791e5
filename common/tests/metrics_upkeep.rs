//! A histogram keeps every sample until the recorder's upkeep folds it into buckets; a service
//! that nobody scrapes must still not grow with every latency it records. This binary counts the
//! bytes it holds with its own allocator, so it is a test file of its own.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use common::shutdown::Shutdown;
use common::telemetry::keep_metrics;
use metrics_exporter_prometheus::PrometheusBuilder;

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SAMPLES: usize = 200_000;

fn held() -> isize {
    HELD.load(Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_latencies_are_folded_into_buckets_between_scrapes() {
    let recorder = PrometheusBuilder::new()
        .set_buckets(&[0.001, 0.01, 0.1])
        .unwrap()
        .build_recorder();
    let handle = recorder.handle();
    let record = |samples: usize| {
        metrics::with_local_recorder(&recorder, || {
            let latency = metrics::histogram!("dingtalk_gateway_test_latency_seconds");
            for _ in 0..samples {
                latency.record(0.003);
            }
        })
    };
    record(1);
    let shutdown = Shutdown::new();
    let upkeep = tokio::spawn(keep_metrics(
        handle.clone(),
        Duration::from_millis(300),
        shutdown.clone(),
    ));
    // The loop's first run is immediate; measure after it, before the next.
    tokio::time::sleep(Duration::from_millis(50)).await;

    let before = held();
    record(SAMPLES);
    let pending = held() - before;
    assert!(
        pending >= (SAMPLES * 8) as isize,
        "{SAMPLES} pending samples should hold at least 8 bytes each, held {pending}"
    );

    tokio::time::sleep(Duration::from_millis(700)).await;
    // Freed sample blocks are reclaimed once later recordings move the epoch on.
    for _ in 0..20 {
        record(1_000);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    record(1);
    let left = held() - before;
    assert!(
        left < pending / 4,
        "the upkeep should have freed the samples: {pending} bytes held after recording, {left} after the upkeep"
    );

    shutdown.trigger();
    upkeep.await.unwrap();
    let text = handle.render();
    let count = format!(
        "dingtalk_gateway_test_latency_seconds_count {}",
        SAMPLES + 20_002
    );
    assert!(text.contains(&count), "{text}");
}
