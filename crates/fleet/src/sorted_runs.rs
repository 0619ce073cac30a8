//! Runs read from files, passed to the report by start time in bounded memory: runs are
//! encoded compactly, sorted in chunks of 1 MiB and, past one chunk, written to a
//! temporary file and merged back (a million runs of a 10M-span history are ~100 MB as
//! structs; the report holds at most a chunk and a read buffer per chunk). Runs with the same
//! start keep the order they were added in, as the database's index keeps them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use runlens_store::domain::{EndedBy, Status};
use runlens_store::scan::{RunFigures, Runs};

/// Encoded runs held in memory before a chunk is sorted and written out.
const CHUNK_BYTES: usize = 1 << 20;

/// Bytes read at a time from each chunk while merging.
const READ_BYTES: usize = 16 << 10;

/// Runs sorted by start.
#[derive(Default)]
pub struct SortedRuns {
    count: usize,
    /// The chunk being filled: encoded runs and (start, offset) of each.
    buffer: Vec<u8>,
    index: Vec<(i64, u32)>,
    /// Chunks written out: (offset, length) in `file`.
    chunks: Vec<(u64, u64)>,
    file: Option<std::fs::File>,
    written: u64,
}

impl SortedRuns {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a run.
    pub fn push(&mut self, run: &RunFigures) -> std::io::Result<()> {
        let offset = u32::try_from(self.buffer.len()).unwrap_or(u32::MAX);
        encode(run, &mut self.buffer);
        self.index.push((run.started_at_ns, offset));
        self.count += 1;
        if self.buffer.len() >= CHUNK_BYTES {
            self.spill()?;
        }
        Ok(())
    }

    /// Sorts the chunk in memory (stable: equal starts keep their order).
    fn sort_chunk(&mut self) -> Vec<u8> {
        self.index.sort_by_key(|&(start, _)| start);
        let mut sorted = Vec::with_capacity(self.buffer.len());
        for &(_, offset) in &self.index {
            let (_, len) = record_at(&self.buffer, offset as usize);
            sorted.extend_from_slice(&self.buffer[offset as usize..offset as usize + len]);
        }
        self.index.clear();
        self.buffer.clear();
        sorted
    }

    /// Writes the chunk out, in order, straight from the buffer.
    fn spill(&mut self) -> std::io::Result<()> {
        self.index.sort_by_key(|&(start, _)| start);
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(tempfile::tempfile()?),
        };
        let mut out = std::io::BufWriter::with_capacity(READ_BYTES, &*file);
        for &(_, offset) in &self.index {
            let (_, len) = record_at(&self.buffer, offset as usize);
            out.write_all(&self.buffer[offset as usize..offset as usize + len])?;
        }
        out.flush()?;
        let len = self.buffer.len() as u64;
        self.chunks.push((self.written, len));
        self.written += len;
        self.index.clear();
        self.buffer.clear();
        Ok(())
    }

    /// Done adding: sorts what is still in memory (written out too when earlier chunks
    /// were).
    pub fn finish(mut self) -> std::io::Result<FinishedRuns> {
        if !self.chunks.is_empty() {
            if !self.buffer.is_empty() {
                self.spill()?;
            }
            return Ok(FinishedRuns {
                count: self.count,
                memory: Vec::new(),
                chunks: self.chunks,
                file: self.file,
            });
        }
        let memory = self.sort_chunk();
        Ok(FinishedRuns {
            count: self.count,
            memory,
            chunks: self.chunks,
            file: self.file,
        })
    }
}

/// Sorted runs, ready to pass.
pub struct FinishedRuns {
    count: usize,
    /// All of them, when they fit one chunk.
    memory: Vec<u8>,
    chunks: Vec<(u64, u64)>,
    file: Option<std::fs::File>,
}

/// A chunk being merged: a window of its bytes.
struct Cursor {
    next: u64,
    end: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl Cursor {
    /// The next record's bytes, reading more when the buffer holds less than one.
    fn next(&mut self, file: &std::fs::File) -> std::io::Result<Option<&[u8]>> {
        if self.pos >= self.buf.len() && self.next >= self.end {
            return Ok(None);
        }
        let need = |buf: &[u8], pos: usize| -> Option<usize> {
            (buf.len() >= pos + 4)
                .then(|| record_len(&buf[pos..]))
                .flatten()
        };
        loop {
            if let Some(len) = need(&self.buf, self.pos)
                && self.buf.len() >= self.pos + len
            {
                let at = self.pos;
                self.pos += len;
                return Ok(Some(&self.buf[at..at + len]));
            }
            if self.next >= self.end {
                return Err(std::io::Error::other("a truncated run record"));
            }
            self.buf.drain(..self.pos);
            self.pos = 0;
            let want = READ_BYTES.max(need(&self.buf, 0).unwrap_or(0));
            let take = want.min((self.end - self.next) as usize);
            let start = self.buf.len();
            self.buf.resize(start + take, 0);
            file.read_exact_at(&mut self.buf[start..], self.next)?;
            self.next += take as u64;
        }
    }
}

impl FinishedRuns {
    fn each_run(&self, each: &mut dyn FnMut(&RunFigures)) -> std::io::Result<()> {
        let mut names: HashMap<String, Arc<str>> = HashMap::new();
        if self.chunks.is_empty() {
            let mut pos = 0;
            while pos < self.memory.len() {
                let (run, len) = decode(&self.memory[pos..], &mut names)?;
                each(&run);
                pos += len;
            }
            return Ok(());
        }
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| std::io::Error::other("no file"))?;
        let mut cursors: Vec<Cursor> = self
            .chunks
            .iter()
            .map(|&(offset, len)| Cursor {
                next: offset,
                end: offset + len,
                buf: Vec::new(),
                pos: 0,
            })
            .collect();
        // The heap holds each chunk's next run: (start, chunk) - the earlier chunk first
        // among equal starts, which keeps the order runs were added in.
        let mut heads: Vec<Option<RunFigures>> = Vec::with_capacity(cursors.len());
        let mut heap = BinaryHeap::new();
        for (k, cursor) in cursors.iter_mut().enumerate() {
            let head = match cursor.next(file)? {
                Some(bytes) => Some(decode(bytes, &mut names)?.0),
                None => None,
            };
            if let Some(run) = &head {
                heap.push(Reverse((run.started_at_ns, k)));
            }
            heads.push(head);
        }
        while let Some(Reverse((_, k))) = heap.pop() {
            if let Some(run) = heads[k].take() {
                each(&run);
            }
            if let Some(bytes) = cursors[k].next(file)? {
                let run = decode(bytes, &mut names)?.0;
                heap.push(Reverse((run.started_at_ns, k)));
                heads[k] = Some(run);
            }
        }
        Ok(())
    }
}

impl Runs for FinishedRuns {
    fn count(&self) -> runlens_store::Result<usize> {
        Ok(self.count)
    }

    fn each(&self, each: &mut dyn FnMut(&RunFigures)) -> runlens_store::Result<()> {
        Ok(self.each_run(each)?)
    }
}

// The record: total length (u32), start, end (flag + i64), end snapshot (flag + i64),
// status, ended by (0: none), then run id, name and error (u32 length, u32::MAX: none).

fn encode(run: &RunFigures, out: &mut Vec<u8>) {
    let at = out.len();
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&run.started_at_ns.to_le_bytes());
    for value in [run.ended_at_ns, run.end_snapshot_id] {
        out.push(u8::from(value.is_some()));
        out.extend_from_slice(&value.unwrap_or(0).to_le_bytes());
    }
    out.push(status_code(run.status));
    out.push(run.ended_by.map_or(0, |e| ended_by_code(e) + 1));
    for text in [Some(&*run.run_id), Some(&*run.name), run.error.as_deref()] {
        match text {
            Some(t) => {
                out.extend_from_slice(&(t.len() as u32).to_le_bytes());
                out.extend_from_slice(t.as_bytes());
            }
            None => out.extend_from_slice(&u32::MAX.to_le_bytes()),
        }
    }
    let len = (out.len() - at) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

/// The length of the record starting `bytes`.
fn record_len(bytes: &[u8]) -> Option<usize> {
    Some(u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize)
}

fn record_at(buffer: &[u8], offset: usize) -> (usize, usize) {
    (
        offset,
        record_len(&buffer[offset..]).unwrap_or(buffer.len() - offset),
    )
}

fn decode(
    bytes: &[u8],
    names: &mut HashMap<String, Arc<str>>,
) -> std::io::Result<(RunFigures, usize)> {
    let bad = || std::io::Error::other("a damaged run record");
    let len = record_len(bytes).ok_or_else(bad)?;
    let record = bytes.get(..len).ok_or_else(bad)?;
    let mut pos = 4;
    let i64_at = |pos: &mut usize| -> std::io::Result<i64> {
        let v = i64::from_le_bytes(
            record
                .get(*pos..*pos + 8)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        );
        *pos += 8;
        Ok(v)
    };
    let started_at_ns = i64_at(&mut pos)?;
    let optional = |pos: &mut usize| -> std::io::Result<Option<i64>> {
        let flag = *record.get(*pos).ok_or_else(bad)?;
        *pos += 1;
        let v = i64_at(pos)?;
        Ok((flag == 1).then_some(v))
    };
    let ended_at_ns = optional(&mut pos)?;
    let end_snapshot_id = optional(&mut pos)?;
    let status = status_of(*record.get(pos).ok_or_else(bad)?);
    let ended_by = match *record.get(pos + 1).ok_or_else(bad)? {
        0 => None,
        code => Some(ended_by_of(code - 1)),
    };
    pos += 2;
    let text = |pos: &mut usize| -> std::io::Result<Option<&str>> {
        let n = u32::from_le_bytes(
            record
                .get(*pos..*pos + 4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        );
        *pos += 4;
        if n == u32::MAX {
            return Ok(None);
        }
        let t = record.get(*pos..*pos + n as usize).ok_or_else(bad)?;
        *pos += n as usize;
        std::str::from_utf8(t).map(Some).map_err(|_| bad())
    };
    let run_id = text(&mut pos)?.unwrap_or_default();
    let name = text(&mut pos)?.unwrap_or_default();
    let error = text(&mut pos)?;
    let name = match names.get(name) {
        Some(shared) => Arc::clone(shared),
        None => {
            let shared: Arc<str> = Arc::from(name);
            names.insert(name.to_owned(), Arc::clone(&shared));
            shared
        }
    };
    Ok((
        RunFigures {
            run_id: run_id.into(),
            name,
            status,
            ended_by,
            error: error.map(Box::from),
            started_at_ns,
            ended_at_ns,
            end_snapshot_id,
        },
        len,
    ))
}

const STATUSES: [Status; 3] = Status::ALL;

fn status_code(status: Status) -> u8 {
    STATUSES.iter().position(|s| *s == status).unwrap_or(0) as u8
}

fn status_of(code: u8) -> Status {
    STATUSES
        .get(code as usize)
        .copied()
        .unwrap_or(Status::Running)
}

fn ended_by_code(ended_by: EndedBy) -> u8 {
    EndedBy::ALL
        .iter()
        .position(|e| *e == ended_by)
        .unwrap_or(0) as u8
}

fn ended_by_of(code: u8) -> EndedBy {
    EndedBy::ALL
        .get(code as usize)
        .copied()
        .unwrap_or(EndedBy::ALL[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(k: i64, start: i64) -> RunFigures {
        RunFigures {
            run_id: format!("run-{k}").into(),
            name: Arc::from(if k % 2 == 0 { "even" } else { "odd" }),
            status: STATUSES[(k % 3) as usize],
            ended_by: (k % 4 == 0).then_some(EndedBy::ALL[(k as usize / 4) % EndedBy::ALL.len()]),
            error: (k % 5 == 0).then(|| format!("error {k}").into()),
            started_at_ns: start,
            ended_at_ns: (k % 7 != 0).then_some(start + 10),
            end_snapshot_id: (k % 3 != 0).then_some(k * 2),
        }
    }

    fn passed(runs: &FinishedRuns) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        runs.each(&mut |r| out.push((r.run_id.to_string(), r.started_at_ns)))
            .unwrap();
        out
    }

    #[test]
    fn runs_come_back_by_start_whole_and_ties_in_order_in_memory_and_from_chunks() {
        // 300,000 runs are several chunks; 100 fit one.
        for n in [100_i64, 300_000] {
            let mut sorted = SortedRuns::new();
            let mut expected = Vec::new();
            for k in 0..n {
                // Starts out of order, with ties.
                let start = (k * 7919) % (n / 2).max(1);
                let r = run(k, start);
                sorted.push(&r).unwrap();
                expected.push(r);
            }
            let finished = sorted.finish().unwrap();
            assert_eq!(finished.count().unwrap(), n as usize);
            let mut want: Vec<(String, i64)> = expected
                .iter()
                .map(|r| (r.run_id.to_string(), r.started_at_ns))
                .collect();
            want.sort_by_key(|(_, s)| *s); // stable: ties in the order added
            assert_eq!(passed(&finished), want, "{n} runs");
            let mut whole = Vec::new();
            finished.each(&mut |r| whole.push(r.clone())).unwrap();
            let first = expected
                .iter()
                .find(|r| r.run_id == whole[0].run_id)
                .unwrap();
            let again = &whole[0];
            assert_eq!(
                (
                    &again.name,
                    again.status,
                    again.ended_by,
                    &again.error,
                    again.ended_at_ns,
                    again.end_snapshot_id
                ),
                (
                    &first.name,
                    first.status,
                    first.ended_by,
                    &first.error,
                    first.ended_at_ns,
                    first.end_snapshot_id
                )
            );
        }
    }
}
