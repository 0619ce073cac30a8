//! The report's spans, sorted by step and duration in bounded memory: an external merge
//! sort. Spans are gathered in chunks of [`CHUNK`]; a full chunk is sorted and written to
//! an anonymous temporary file (`TMPDIR`, deleted when closed); reading merges the chunks
//! back in order. Ten million spans take 160 MB of temporary file and about 4 MB of memory
//! for the chunk plus 64 KiB per file while merging, where holding them took 160 MB of
//! memory plus the per-step sorts.
//!
//! Where no temporary file can be written (a read-only container without `TMPDIR`), the
//! chunks stay in memory: the report is then as large as before, but still right.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};

/// Spans per chunk (16 bytes each: 4 MiB).
const CHUNK: usize = if cfg!(test) { 97 } else { 1 << 18 };

/// Bytes of read buffer per spilled chunk while merging.
const READ_BUFFER: usize = 64 << 10;

/// A span's snapshot reference meaning "none".
pub const NO_SNAPSHOT: u32 = u32::MAX;

/// One finished span as the sort keeps it (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpanRecord {
    /// The step (index into the step names): first in the order.
    step: u32,
    /// The duration as an order-keeping integer (see [`duration_key`]).
    key: u64,
    /// The start snapshot's reference ([`NO_SNAPSHOT`]: none), then whether it failed
    /// (the top bit): neither takes part in the order that matters.
    snapshot_failed: u64,
}

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
    /// `snapshot` ([`NO_SNAPSHOT`]: none).
    pub fn new(step: u32, duration_ms: f64, failed: bool, snapshot: u32) -> Self {
        Self {
            step,
            key: duration_key(duration_ms),
            snapshot_failed: u64::from(snapshot) | u64::from(failed) << 63,
        }
    }

    /// The step's index.
    pub fn step(&self) -> u32 {
        self.step
    }

    /// Duration in milliseconds.
    pub fn duration_ms(&self) -> f64 {
        duration_of(self.key)
    }

    /// Ended as failed.
    pub fn failed(&self) -> bool {
        self.snapshot_failed >> 63 == 1
    }

    /// The start snapshot's reference, [`NO_SNAPSHOT`] when none.
    pub fn snapshot(&self) -> u32 {
        self.snapshot_failed as u32
    }

    fn to_bytes(self) -> [u8; 16] {
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&self.key.to_le_bytes());
        // The failed bit rides in the step's top bit on disk (steps are far fewer).
        let step_failed = self.step | u32::from(self.failed()) << 31;
        bytes[8..12].copy_from_slice(&step_failed.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.snapshot().to_le_bytes());
        bytes
    }

    fn from_bytes(bytes: [u8; 16]) -> Self {
        let word = |range: std::ops::Range<usize>| {
            let mut b = [0; 4];
            b.copy_from_slice(&bytes[range]);
            u32::from_le_bytes(b)
        };
        let mut key = [0; 8];
        key.copy_from_slice(&bytes[..8]);
        let step_failed = word(8..12);
        Self {
            step: step_failed & 0x7fff_ffff,
            key: u64::from_le_bytes(key),
            snapshot_failed: u64::from(word(12..16)) | u64::from(step_failed >> 31) << 63,
        }
    }
}

/// Gathers spans; [`SpanSorter::finish`] gives them back in order.
#[derive(Debug)]
pub struct SpanSorter {
    chunk: Vec<SpanRecord>,
    /// Sorted chunks on disk, each with its number of spans.
    spilled: Vec<(File, usize)>,
    /// Sorted chunks kept in memory (no temporary file could be written).
    kept: Vec<Vec<SpanRecord>>,
    /// Spans per chunk (tests use small ones).
    chunk_size: usize,
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
            spilled: Vec::new(),
            kept: Vec::new(),
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
            self.spill();
        }
    }

    /// Sorts the chunk and writes it out (or keeps it, when it cannot be written).
    fn spill(&mut self) {
        self.chunk.sort_unstable();
        match write_chunk(&self.chunk) {
            Ok(file) => {
                self.spilled.push((file, self.chunk.len()));
                self.chunk.clear();
            }
            Err(e) => {
                if self.kept.is_empty() {
                    tracing::debug!(
                        "report: cannot write a temporary file ({e}); keeping spans in memory"
                    );
                }
                let full = std::mem::take(&mut self.chunk);
                self.kept.push(full);
            }
        }
    }

    /// Every span added, ready to be read in (step, duration) order.
    pub fn finish(mut self) -> SortedSpans {
        self.chunk.sort_unstable();
        self.chunk.shrink_to_fit();
        let mut kept = self.kept;
        if !self.chunk.is_empty() {
            kept.push(self.chunk);
        }
        SortedSpans {
            spilled: self.spilled,
            kept,
        }
    }
}

fn write_chunk(chunk: &[SpanRecord]) -> io::Result<File> {
    let mut out = BufWriter::with_capacity(READ_BUFFER, tempfile::tempfile()?);
    for span in chunk {
        out.write_all(&span.to_bytes())?;
    }
    let mut file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}

/// Sorted chunks of spans.
#[derive(Debug, Default)]
pub struct SortedSpans {
    spilled: Vec<(File, usize)>,
    kept: Vec<Vec<SpanRecord>>,
}

impl SortedSpans {
    /// How many spans.
    pub fn len(&self) -> usize {
        self.spilled.iter().map(|(_, n)| n).sum::<usize>()
            + self.kept.iter().map(Vec::len).sum::<usize>()
    }

    /// Every span in (step, duration) order, through `each`.
    pub fn merged(&mut self, mut each: impl FnMut(SpanRecord)) -> io::Result<()> {
        let mut sources: Vec<Source> = Vec::new();
        for (file, n) in &mut self.spilled {
            file.seek(SeekFrom::Start(0))?;
            sources.push(Source::File(
                BufReader::with_capacity(READ_BUFFER, &*file),
                *n,
            ));
        }
        for chunk in &self.kept {
            sources.push(Source::Memory(chunk.iter()));
        }
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

    /// Every span, in no particular order, through `each` (a cheaper pass).
    pub fn unordered(&mut self, mut each: impl FnMut(SpanRecord)) -> io::Result<()> {
        for (file, n) in &mut self.spilled {
            file.seek(SeekFrom::Start(0))?;
            let mut source = Source::File(BufReader::with_capacity(READ_BUFFER, &*file), *n);
            while let Some(span) = source.next()? {
                each(span);
            }
        }
        self.kept.iter().flatten().for_each(|&s| each(s));
        Ok(())
    }
}

/// One sorted chunk being read.
enum Source<'a> {
    /// From its file, with the spans left to read.
    File(BufReader<&'a File>, usize),
    /// From memory.
    Memory(std::slice::Iter<'a, SpanRecord>),
}

impl Source<'_> {
    fn next(&mut self) -> io::Result<Option<SpanRecord>> {
        match self {
            Source::File(_, 0) => Ok(None),
            Source::File(reader, left) => {
                let mut bytes = [0; 16];
                reader.read_exact(&mut bytes)?;
                *left -= 1;
                Ok(Some(SpanRecord::from_bytes(bytes)))
            }
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
            (0x7fff_ffff, 3e9, true, 12345),
        ] {
            let r = SpanRecord::new(step, d, failed, snap);
            let back = SpanRecord::from_bytes(r.to_bytes());
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
        let mut sorted = sorter.finish();
        assert_eq!(sorted.len(), 100);
        let mut got = Vec::new();
        sorted.merged(|s| got.push(s)).unwrap();
        assert_eq!(got, want);
        // And again (the report reads twice), and in no order.
        let mut again = Vec::new();
        sorted.merged(|s| again.push(s)).unwrap();
        assert_eq!(again, want);
        let mut any = Vec::new();
        sorted.unordered(|s| any.push(s)).unwrap();
        any.sort();
        assert_eq!(any, want);
    }
}
