//! The hot paths allocate nothing once their buffers are warm: writing a `media`
//! event into a reused `String`, and parsing an audio delta into a reused `Vec`.
//! Runs every 20 ms per call in each direction, so this is checked, not assumed.
//!
//! A counting global allocator sees every allocation in this test binary; counts are
//! per thread so the test harness's own threads do not disturb them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use protocol::{parse_command, write_event, Command, Event, MAX_MESSAGE_BYTES};

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with` because the allocator may run while thread-locals are torn down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is forwarded unchanged to the system allocator; we only count.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations_during(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn media_events_and_audio_deltas_do_not_allocate_when_warm() {
    let pcm: Vec<u8> = (0..320u32).map(|i| (i * 31 % 251) as u8).collect();
    let media = Event::Media {
        chunk: 123_456,
        timestamp_ms: 2_469_100,
        payload: &pcm,
    };

    let mut out = String::new();
    write_event(
        &mut out,
        "MZ18ad3ab5a668481ce02b83e7395059f0",
        123_457,
        &media,
    );
    let warm = allocations_during(|| {
        for _ in 0..100 {
            out.clear();
            write_event(
                &mut out,
                "MZ18ad3ab5a668481ce02b83e7395059f0",
                123_457,
                &media,
            );
        }
    });
    assert_eq!(warm, 0, "write_event(media) allocated with a warm buffer");

    // Cold: exactly the one reserve.
    let mut cold = String::new();
    let first = allocations_during(|| {
        write_event(&mut cold, "MZ1", 2, &media);
    });
    assert_eq!(first, 1, "write_event(media) should grow `out` once");

    let delta = protocol::command_json(&Command::AudioDelta, &pcm);
    let mut audio = Vec::new();
    assert_eq!(
        parse_command(&delta, &mut audio, MAX_MESSAGE_BYTES),
        Ok(Command::AudioDelta)
    );
    let warm = allocations_during(|| {
        for _ in 0..100 {
            let parsed = parse_command(&delta, &mut audio, MAX_MESSAGE_BYTES);
            assert!(parsed.is_ok());
        }
    });
    assert_eq!(warm, 0, "parse_command(delta) allocated with a warm buffer");
    assert_eq!(audio, pcm);
}
