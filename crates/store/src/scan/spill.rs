//! The report's spans, sorted by step and duration in bounded memory: an external merge
//! sort. Spans are gathered in chunks of [`CHUNK`]; a full chunk is sorted (by a thread of
//! its own while the next one fills) and appended to one anonymous temporary file
//! (`TMPDIR`, deleted when closed); reading merges the chunks back in order, a step at a
//! time. Ten million spans take 160 MB of temporary file and about 4 MiB of memory while
//! read (two chunks) plus [`READ_BUFFER`] per chunk while merging, where holding them took
//! 160 MB of memory plus the per-step sorts.
//!
//! Where no temporary file can be written (a read-only container without `TMPDIR`), the
//! chunks stay in memory: the report is then as large as before, but still right.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io;
use std::sync::Arc;

/// Spans per chunk (16 bytes each: 2 MiB).
pub const CHUNK: usize = if cfg!(test) { 97 } else { 1 << 17 };

/// Bytes of read buffer per spilled chunk while merging.
pub const READ_BUFFER: usize = 16 << 10;

/// Says, once a process, that a temporary file could not be written (`error`) and the
/// report keeps in memory what it would have put there: it still runs, in more memory.
pub fn kept_in_memory(error: &io::Error) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        tracing::warn!(
            "report: cannot write a temporary file in TMPDIR ({error}); keeping the sorted \
             spans and snapshot figures in memory instead, which takes more memory"
        );
    });
}

/// A span's snapshot reference meaning "none". References have 31 bits: the top bit of
/// their word is the failed flag.
pub const NO_SNAPSHOT: u32 = 0x7fff_ffff;

/// The failed flag in [`SpanRecord`]'s snapshot word.
const FAILED: u32 = 1 << 31;

/// One finished span as the sort keeps it, in memory and on disk: 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpanRecord {
    /// The step (index into the step names): first in the order.
    step: u32,
    /// The duration as an order-keeping integer (see [`duration_key`]).
    key: u64,
    /// The start snapshot's reference ([`NO_SNAPSHOT`]: none) and [`FAILED`]: only a
    /// tie-break in the order.
    snapshot_failed: u32,
}

const _: () = assert!(std::mem::size_of::<SpanRecord>() == 16);

/// `duration_ms`'s bits turned so that unsigned order is `f64::total_cmp`'s order.
fn duration_key(duration_ms: f64) -> u64 {
    let bits = duration_ms.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

fn duration_of(key: u64) -> f64 {
    f64::from_bits(if key >> 63 == 1 {
        key & !(1 << 63)
    } else {
        !key
    })
}

impl SpanRecord {
    /// A span of step `step` lasting `duration_ms`, started at snapshot reference
    /// `snapshot` ([`NO_SNAPSHOT`]: none; a larger one, past two billion snapshots, counts
    /// as none).
    pub fn new(step: u32, duration_ms: f64, failed: bool, snapshot: u32) -> Self {
        Self {
            step,
            key: duration_key(duration_ms),
            snapshot_failed: snapshot.min(NO_SNAPSHOT) | if failed { FAILED } else { 0 },
        }
    }

    /// The step's index.
    #[cfg(test)]
    pub fn step(&self) -> u32 {
        self.step
    }

    /// Duration in milliseconds.
    pub fn duration_ms(&self) -> f64 {
        duration_of(self.key)
    }

    /// Ended as failed.
    pub fn failed(&self) -> bool {
        self.snapshot_failed & FAILED != 0
    }

    /// The start snapshot's reference, [`NO_SNAPSHOT`] when none.
    pub fn snapshot(&self) -> u32 {
        self.snapshot_failed & !FAILED
    }

    fn to_bytes(self) -> [u8; 16] {
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&self.key.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.step.to_le_bytes());
        bytes[12..].copy_from_slice(&self.snapshot_failed.to_le_bytes());
        bytes
    }

    fn from_bytes(bytes: &[u8; 16]) -> Self {
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let mut key = [0; 8];
        key.copy_from_slice(&bytes[..8]);
        Self {
            step: word(8),
            key: u64::from_le_bytes(key),
            snapshot_failed: word(12),
        }
    }
}

/// A sorted chunk: where it is, and where each step's spans start in it.
#[derive(Debug)]
struct Chunk {
    /// On disk, or in memory where no temporary file could be written.
    place: Place,
    /// (step, first index, spans) of each step present, in step order.
    sections: Vec<(u32, usize, usize)>,
}

#[derive(Debug)]
enum Place {
    /// In the sorter's one temporary file, from this byte on.
    File(Arc<File>, u64),
    Memory(Vec<SpanRecord>),
}

/// The one temporary file every chunk is appended to (one descriptor however many chunks),
/// and where the next chunk goes.
#[derive(Debug, Default)]
struct SpillFile {
    file: Option<Arc<File>>,
    end: u64,
}

impl SpillFile {
    /// Appends `spans`; returns the file and where they start.
    fn append(&mut self, spans: &[SpanRecord]) -> io::Result<(Arc<File>, u64)> {
        use std::os::unix::fs::FileExt;
        let file = match &self.file {
            Some(file) => Arc::clone(file),
            None => Arc::clone(self.file.insert(Arc::new(tempfile::tempfile()?))),
        };
        let start = self.end;
        let mut buffer = Vec::with_capacity(READ_BUFFER);
        for piece in spans.chunks(READ_BUFFER / 16) {
            buffer.clear();
            piece
                .iter()
                .for_each(|s| buffer.extend_from_slice(&s.to_bytes()));
            file.write_all_at(&buffer, self.end)?;
            self.end += buffer.len() as u64;
        }
        Ok((file, start))
    }
}

impl Chunk {
    /// Sorts `spans` and writes them out (or keeps them, when they cannot be written).
    fn new(mut spans: Vec<SpanRecord>, spill: &mut SpillFile) -> (Self, Option<Vec<SpanRecord>>) {
        spans.sort_unstable();
        let sections = sections(&spans);
        match spill.append(&spans) {
            Ok((file, start)) => {
                spans.clear();
                let chunk = Self {
                    place: Place::File(file, start),
                    sections,
                };
                // The buffer goes back to be filled again.
                (chunk, Some(spans))
            }
            Err(e) => {
                kept_in_memory(&e);
                spans.shrink_to_fit();
                let chunk = Self {
                    place: Place::Memory(spans),
                    sections,
                };
                (chunk, None)
            }
        }
    }

    fn len(&self) -> usize {
        self.sections.iter().map(|&(_, _, n)| n).sum()
    }

    /// A reader of step `step`'s spans in this chunk.
    fn section(&self, step: u32) -> Source<'_> {
        // Sections are in step order: a history of thousands of span names has as many.
        let (start, n) = self
            .sections
            .binary_search_by_key(&step, |&(s, _, _)| s)
            .map_or((0, 0), |k| (self.sections[k].1, self.sections[k].2));
        match &self.place {
            Place::File(file, offset) => Source::File(SectionReader {
                file,
                at: offset + start as u64 * 16,
                left: n,
                buffer: Vec::new(),
                used: 0,
            }),
            Place::Memory(spans) => Source::Memory(spans[start..start + n].iter()),
        }
    }
}

/// Gathers spans; [`SpanSorter::finish`] gives them back in order. Full chunks are
/// sorted and written by a thread of their own while the next one fills.
#[derive(Debug)]
pub struct SpanSorter {
    chunk: Vec<SpanRecord>,
    /// The thread that sorts and writes full chunks, from the first one on.
    worker: Option<Worker>,
    /// Spans per chunk (tests use small ones).
    chunk_size: usize,
}

/// The sorting thread, its way in, and the emptied chunks it gives back to be filled.
#[derive(Debug)]
struct Worker {
    full: std::sync::mpsc::SyncSender<Vec<SpanRecord>>,
    emptied: std::sync::mpsc::Receiver<Vec<SpanRecord>>,
    thread: std::thread::JoinHandle<Vec<Chunk>>,
}

impl Worker {
    fn start() -> Self {
        // A full chunk is handed over only when the last one is written: at most two in
        // memory, the one filling and the one being sorted.
        let (full, incoming) = std::sync::mpsc::sync_channel::<Vec<SpanRecord>>(0);
        let (give_back, emptied) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut sorted = Vec::new();
            let mut spill = SpillFile::default();
            for spans in incoming {
                let (chunk, buffer) = Chunk::new(spans, &mut spill);
                sorted.push(chunk);
                if let Some(buffer) = buffer {
                    // The filler may be gone already: then the buffer is simply freed.
                    let _ = give_back.send(buffer);
                }
            }
            sorted
        });
        Self {
            full,
            emptied,
            thread,
        }
    }
}

impl Default for SpanSorter {
    fn default() -> Self {
        Self::new()
    }
}

impl SpanSorter {
    /// A sorter with chunks of the usual size.
    pub fn new() -> Self {
        Self::with_chunk(CHUNK)
    }

    /// A sorter with chunks of `chunk_size` spans.
    pub fn with_chunk(chunk_size: usize) -> Self {
        Self {
            chunk: Vec::new(),
            worker: None,
            chunk_size: chunk_size.max(1),
        }
    }

    /// Adds a span.
    pub fn push(&mut self, span: SpanRecord) {
        if self.chunk.capacity() == 0 {
            self.chunk.reserve_exact(self.chunk_size);
        }
        self.chunk.push(span);
        if self.chunk.len() >= self.chunk_size {
            let worker = self.worker.get_or_insert_with(Worker::start);
            let next = worker.emptied.try_recv().unwrap_or_default();
            let full = std::mem::replace(&mut self.chunk, next);
            if let Err(std::sync::mpsc::SendError(full)) = worker.full.send(full) {
                // The thread is gone (it panicked): finish() reports that; keep the spans.
                self.chunk = full;
            }
        }
    }

    /// Every span added, ready to be read in (step, duration) order.
    pub fn finish(mut self) -> SortedSpans {
        let mut chunks = match self.worker.take() {
            Some(worker) => {
                drop(worker.full);
                worker
                    .thread
                    .join()
                    // A panic there is a bug here: pass it on as it is.
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }
            None => Vec::new(),
        };
        if !self.chunk.is_empty() {
            // The last chunk, usually part-full, stays in memory.
            let mut last = std::mem::take(&mut self.chunk);
            last.sort_unstable();
            last.shrink_to_fit();
            chunks.push(Chunk {
                sections: sections(&last),
                place: Place::Memory(last),
            });
        }
        SortedSpans { chunks }
    }
}

/// (step, first index, spans) of each step in sorted `spans`.
fn sections(spans: &[SpanRecord]) -> Vec<(u32, usize, usize)> {
    let mut sections: Vec<(u32, usize, usize)> = Vec::new();
    for (i, span) in spans.iter().enumerate() {
        match sections.last_mut() {
            Some((step, _, n)) if *step == span.step => *n += 1,
            _ => sections.push((span.step, i, 1)),
        }
    }
    sections
}

/// Sorted chunks of spans. Reading takes `&self` (positional reads), so threads can read
/// different steps at once.
#[derive(Debug, Default)]
pub struct SortedSpans {
    chunks: Vec<Chunk>,
}

impl SortedSpans {
    /// How many spans.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Chunk::len).sum()
    }

    /// Whether no span is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds one span, kept in memory in order (tests build small histories by hand).
    #[doc(hidden)]
    pub fn add(&mut self, span: SpanRecord) {
        if !matches!(
            self.chunks.last(),
            Some(Chunk {
                place: Place::Memory(_),
                ..
            })
        ) {
            self.chunks.push(Chunk {
                place: Place::Memory(Vec::new()),
                sections: Vec::new(),
            });
        }
        if let Some(Chunk {
            place: Place::Memory(spans),
            sections: kept,
        }) = self.chunks.last_mut()
        {
            let at = spans.partition_point(|s| *s < span);
            spans.insert(at, span);
            *kept = sections(spans);
        }
    }

    /// How many spans each step has, by step index (`steps` entries).
    pub fn per_step(&self, steps: usize) -> Vec<usize> {
        let mut counts = vec![0; steps];
        for &(step, _, n) in self.chunks.iter().flat_map(|c| &c.sections) {
            if let Some(count) = counts.get_mut(step as usize) {
                *count += n;
            }
        }
        counts
    }

    /// Step `step`'s spans in duration order, through `each`.
    pub fn merged(&self, step: u32, mut each: impl FnMut(SpanRecord)) -> io::Result<()> {
        let mut sources: Vec<Source> = self.chunks.iter().map(|c| c.section(step)).collect();
        let mut heap = BinaryHeap::with_capacity(sources.len());
        for (i, source) in sources.iter_mut().enumerate() {
            if let Some(span) = source.next()? {
                heap.push(Reverse((span, i)));
            }
        }
        while let Some(Reverse((span, i))) = heap.pop() {
            each(span);
            if let Some(next) = sources[i].next()? {
                heap.push(Reverse((next, i)));
            }
        }
        Ok(())
    }

    /// Step `step`'s spans in no particular order, through `each` (a cheaper pass).
    pub fn unordered(&self, step: u32, mut each: impl FnMut(SpanRecord)) -> io::Result<()> {
        for chunk in &self.chunks {
            let mut source = chunk.section(step);
            while let Some(span) = source.next()? {
                each(span);
            }
        }
        Ok(())
    }
}

/// Reads a run of records from a file by position, a buffer at a time.
struct SectionReader<'a> {
    file: &'a File,
    /// Next byte to read.
    at: u64,
    /// Records not yet returned.
    left: usize,
    buffer: Vec<u8>,
    /// Bytes of `buffer` returned.
    used: usize,
}

impl SectionReader<'_> {
    fn next(&mut self) -> io::Result<Option<SpanRecord>> {
        use std::os::unix::fs::FileExt;
        if self.left == 0 {
            return Ok(None);
        }
        if self.used == self.buffer.len() {
            let bytes = (self.left * 16).min(READ_BUFFER);
            self.buffer.resize(bytes, 0);
            self.file.read_exact_at(&mut self.buffer, self.at)?;
            self.at += bytes as u64;
            self.used = 0;
        }
        let mut record = [0; 16];
        record.copy_from_slice(&self.buffer[self.used..self.used + 16]);
        self.used += 16;
        self.left -= 1;
        Ok(Some(SpanRecord::from_bytes(&record)))
    }
}

/// One sorted chunk's section being read.
enum Source<'a> {
    File(SectionReader<'a>),
    Memory(std::slice::Iter<'a, SpanRecord>),
}

impl Source<'_> {
    fn next(&mut self) -> io::Result<Option<SpanRecord>> {
        match self {
            Source::File(reader) => reader.next(),
            Source::Memory(iter) => Ok(iter.next().copied()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_keys_keep_total_order() {
        let values = [-5.0, -0.0, 0.0, 1e-9, 0.5, 1.0, 1e12, f64::INFINITY];
        for pair in values.windows(2) {
            assert!(duration_key(pair[0]) < duration_key(pair[1]), "{pair:?}");
        }
        for v in values {
            assert_eq!(duration_of(duration_key(v)).to_bits(), v.to_bits());
        }
    }

    #[test]
    fn records_survive_the_disk() {
        for (step, d, failed, snap) in [
            (0, 1.5, false, 0),
            (7, 0.0, true, NO_SNAPSHOT),
            (u32::MAX, 3e9, true, 12345),
            (3, -1.0, false, NO_SNAPSHOT - 1),
        ] {
            let r = SpanRecord::new(step, d, failed, snap);
            let back = SpanRecord::from_bytes(&r.to_bytes());
            assert_eq!(back, r);
            assert_eq!(
                (
                    back.step(),
                    back.duration_ms(),
                    back.failed(),
                    back.snapshot()
                ),
                (step, d, failed, snap)
            );
        }
    }

    #[test]
    fn spans_come_back_in_step_and_duration_order_across_chunks() {
        let mut sorter = SpanSorter::with_chunk(7);
        let mut want = Vec::new();
        let mut x = 12345u64;
        for i in 0..100u32 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let span = SpanRecord::new((x >> 60) as u32 % 3, (x >> 40) as f64 / 7.0, i % 5 == 0, i);
            sorter.push(span);
            want.push(span);
        }
        want.sort();
        let sorted = sorter.finish();
        assert_eq!(sorted.len(), 100);
        let per_step = sorted.per_step(3);
        assert_eq!(per_step.iter().sum::<usize>(), 100);
        let mut got = Vec::new();
        for step in 0..3 {
            sorted.merged(step, |s| got.push(s)).unwrap();
        }
        assert_eq!(got, want);
        // And again (the report reads twice), and in no order.
        for step in 0..3 {
            let mut any = Vec::new();
            sorted.unordered(step, |s| any.push(s)).unwrap();
            assert_eq!(any.len(), per_step[step as usize]);
            any.sort();
            let of_step: Vec<SpanRecord> =
                want.iter().copied().filter(|s| s.step() == step).collect();
            assert_eq!(any, of_step);
        }
    }
}
