//! The analysis side alone, without probes: how fast the library turns a large live set into
//! the views. Builds a table of N live blocks (default 10 million) over 1000 call paths by
//! applying synthetic events, then times each view. `cargo xtask bench` runs it and reads the
//! JSON line it prints last.
//!
//! `cargo bench -p muppy-user --bench analysis -- [BLOCKS]`

use std::time::{Duration, Instant};

use muppy::{
    event::{Alloc, Free, HeapChange},
    table::{LiveTable, StackRef},
};
use muppy_core::{
    analysis::{self as summary, GroupBy, calltree as tree},
    model::{Counters, Filter, Frame, Heap, StackState, Trace},
    snapshot::Snapshot,
};

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

fn alloc(addr: u64, size: u64, caller: u64) -> HeapChange {
    HeapChange::Alloc(Alloc {
        addr,
        size,
        tid: 1 + u32::from((addr >> 4).is_multiple_of(8)),
        caller,
        ts_ns: 1_000_000_000 + addr,
        stack: StackRef::Off,
    })
}

fn free(addr: u64, caller: u64) -> HeapChange {
    HeapChange::Free(Free {
        addr,
        caller,
        by_realloc: false,
        ts_ns: 0,
    })
}

fn main() {
    let blocks: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    const TRACES: u64 = 1000;
    let traces: Vec<Trace> = (0..TRACES)
        .map(|i| {
            let frame = |function: String, line: u64, addr: u64| Frame {
                addr,
                module: Some("work".into()),
                offset: addr - 0x40_0000,
                function: Some(function),
                function_offset: 0x10,
                file: Some("work.c".into()),
                line: u32::try_from(line).ok(),
                inlined: false,
            };
            Trace::new(
                vec![
                    frame(format!("site_{i}"), 10 + i, 0x40_0000 + i),
                    frame(
                        format!("caller_{}", i % 37),
                        5000 + i % 37,
                        0x41_0000 + i % 37,
                    ),
                    frame("main".into(), 9000, 0x42_0000),
                ],
                StackState::Walked,
            )
        })
        .collect();
    // Consecutive 64-byte-spaced addresses, the way a heap hands them out.
    let addr = |i: u64| 0x5555_0000_0000 + i * 64;
    let mut table = LiveTable::new();
    let (_, apply) = timed(|| {
        for i in 0..blocks {
            table.apply(&alloc(addr(i), 16 + i % 240, 0x40_0000 + i % TRACES), 0);
        }
    });
    fn heap<'a>(t: &'a LiveTable, traces: &'a [Trace], now_ns: u64) -> Heap<'a> {
        Heap {
            pid: 1,
            blocks: t,
            traces,
            now_ns,
            counters: Counters::default(),
            sample_bytes: 0,
            modules: &[],
            allocated: &[],
        }
    }
    let now = 2_000_000_000 + blocks;
    let all = Filter::default();
    let (before, by_site) =
        timed(|| summary::summarize(&heap(&table, &traces, now), &all, GroupBy::Site));
    let (_, by_stack) =
        timed(|| summary::summarize(&heap(&table, &traces, now), &all, GroupBy::Stack));
    let (_, by_size) =
        timed(|| summary::summarize(&heap(&table, &traces, now), &all, GroupBy::Size));
    // Grow by a tenth and free a tenth, then diff.
    for i in 0..blocks / 10 {
        table.apply(&free(addr(i), 0x1), 0);
        table.apply(&alloc(addr(blocks + i), 32, 0x40_0000 + i % 7), 0);
    }
    let ((after, d), diff) = timed(|| {
        let after = summary::summarize(&heap(&table, &traces, now), &all, GroupBy::Site);
        let d = summary::diff(&before, &after);
        (after, d)
    });
    let (roots, tree_time) = timed(|| tree::build(&heap(&table, &traces, now), &all));
    let (bytes, save) = timed(|| Snapshot::of(&heap(&table, &traces, now), "bench").encode());
    let (loaded, load) = timed(|| Snapshot::decode(&bytes, std::path::Path::new("bench")));
    let loaded = loaded.expect("own snapshot");
    assert_eq!(loaded.blocks.len() as u64, blocks);
    assert_eq!(after.total().0, blocks);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("analysis of {blocks} live blocks over {TRACES} call paths");
    println!(
        "  apply {blocks} events: {:.0} ms ({:.1} M events/s)",
        ms(apply),
        blocks as f64 / apply.as_secs_f64() / 1e6
    );
    println!("  summary by site:  {:.0} ms", ms(by_site));
    println!("  summary by stack: {:.0} ms", ms(by_stack));
    println!("  summary by size:  {:.0} ms", ms(by_size));
    println!(
        "  summary + diff:   {:.0} ms ({} changed rows)",
        ms(diff),
        d.rows.len()
    );
    println!(
        "  tree:             {:.0} ms ({} roots)",
        ms(tree_time),
        roots.len()
    );
    println!(
        "  snapshot save:    {:.0} ms ({:.1} bytes per block)",
        ms(save),
        bytes.len() as f64 / blocks as f64
    );
    println!("  snapshot load:    {:.0} ms", ms(load));
    println!(
        "{}",
        serde_json::json!({
            "blocks": blocks,
            "apply_ms": ms(apply),
            "apply_events_per_second": blocks as f64 / apply.as_secs_f64(),
            "summary_site_ms": ms(by_site),
            "summary_stack_ms": ms(by_stack),
            "summary_size_ms": ms(by_size),
            "summary_and_diff_ms": ms(diff),
            "tree_ms": ms(tree_time),
            "snapshot_save_ms": ms(save),
            "snapshot_load_ms": ms(load),
            "snapshot_bytes_per_block": bytes.len() as f64 / blocks as f64,
        })
    );
}
