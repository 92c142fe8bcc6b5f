//! [`scan_map`]: a whole column family read in key order with the costly
//! part of each record (opening a sealed value, decoding it) done on several
//! threads. Start-up uses it to rebuild the key index from every revision
//! record: one thread iterates the engine, the workers open and decode
//! chunks of records, and the caller's visitor sees the results in key
//! order, so what it builds is the same as with a plain scan.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;

use super::{Cf, Engine, Error, Scan};

/// Records per chunk handed to a worker: large enough that the channels
/// cost nothing per record, small enough to keep every thread busy.
const CHUNK_RECORDS: usize = 512;
/// Chunks in flight per worker (read ahead, or mapped and waiting for the
/// visitor): bounds the memory the pipeline holds.
const IN_FLIGHT_PER_WORKER: usize = 4;

/// Records as stored by the engine, packed in one buffer.
#[derive(Default)]
struct Chunk {
    /// Every key and value, one after the other.
    bytes: Vec<u8>,
    /// Per record: where its key ends and where its value ends in `bytes`.
    ends: Vec<(usize, usize)>,
}

impl Chunk {
    fn push(&mut self, key: &[u8], value: &[u8]) {
        self.bytes.extend_from_slice(key);
        let key_end = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.ends.push((key_end, self.bytes.len()));
    }

    fn records(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut start = 0;
        self.ends.iter().map(move |&(key_end, end)| {
            let record = (&self.bytes[start..key_end], &self.bytes[key_end..end]);
            start = end;
            record
        })
    }
}

/// A chunk to map, and where its results go.
type Job<T, E> = (Chunk, SyncSender<Vec<Result<T, E>>>);

/// How many threads to map on: the cores this process may use (at most 8).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// Reads every record of `cf` in key order, runs `map` on each (key, value
/// as [`Engine::scan`] gives it) on `threads` worker threads, and hands the
/// results to `visit` on the calling thread, in key order. The first error
/// (the engine's, `map`'s or `visit`'s) stops everything and is returned;
/// `visit` sees nothing after it. With `threads` <= 1 it is a plain scan.
pub fn scan_map<T, E>(
    engine: &dyn Engine,
    cf: Cf,
    threads: usize,
    map: impl Fn(&[u8], &[u8]) -> Result<T, E> + Sync,
    mut visit: impl FnMut(T) -> Result<(), E>,
) -> Result<(), E>
where
    T: Send,
    E: From<Error> + Send,
{
    if threads <= 1 {
        return super::try_scan(engine, cf, &[], None, |k, v| {
            visit(map(k, v)?)?;
            Ok(Scan::Continue)
        });
    }
    let stop = AtomicBool::new(false);
    let (jobs_tx, jobs_rx) = sync_channel::<Job<T, E>>(threads * IN_FLIGHT_PER_WORKER);
    let jobs_rx = Mutex::new(jobs_rx);
    let (order_tx, order_rx) =
        sync_channel::<Receiver<Vec<Result<T, E>>>>(threads * IN_FLIGHT_PER_WORKER);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| work(engine, cf, &jobs_rx, &map, &stop));
        }
        let reader = scope.spawn(|| read(engine, cf, jobs_tx, order_tx, &stop));
        let mut failure = None;
        'chunks: for results in order_rx.iter() {
            // A worker that stopped early drops its sender: the error that
            // stopped it is then found elsewhere (or the reader's).
            let Ok(results) = results.recv() else { break };
            for result in results {
                if let Err(e) = result.and_then(&mut visit) {
                    failure = Some(e);
                    break 'chunks;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        drop(order_rx);
        let read = match reader.join() {
            Ok(read) => read,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        match (failure, read) {
            (Some(e), _) => Err(e),
            (None, Err(e)) => Err(e.into()),
            (None, Ok(())) => Ok(()),
        }
    })
}

/// The reader: packs the records into chunks and hands each to the
/// workers, and its result slot to the visitor, in order.
fn read<T, E>(
    engine: &dyn Engine,
    cf: Cf,
    jobs: SyncSender<Job<T, E>>,
    order: SyncSender<Receiver<Vec<Result<T, E>>>>,
    stop: &AtomicBool,
) -> Result<(), Error> {
    let send = |chunk: Chunk| -> bool {
        let (tx, rx) = sync_channel(1);
        order.send(rx).is_ok() && jobs.send((chunk, tx)).is_ok()
    };
    let mut chunk = Chunk::default();
    let mut gone = false;
    engine.scan_raw(cf, &[], None, &mut |key, value| {
        chunk.push(key, value);
        if chunk.ends.len() == CHUNK_RECORDS
            && (stop.load(Ordering::Relaxed) || !send(std::mem::take(&mut chunk)))
        {
            gone = true;
            return Scan::Stop;
        }
        Scan::Continue
    })?;
    if !gone && !chunk.ends.is_empty() {
        send(chunk);
    }
    Ok(())
}

/// A worker: opens and maps each record of the chunks it takes, until the
/// reader is done (once stopped, it only drains the queue); a chunk's
/// results stop at its first error.
fn work<T, E: From<Error>>(
    engine: &dyn Engine,
    cf: Cf,
    jobs: &Mutex<Receiver<Job<T, E>>>,
    map: &(impl Fn(&[u8], &[u8]) -> Result<T, E> + Sync),
    stop: &AtomicBool,
) {
    loop {
        let job = crate::locks::lock(jobs).recv();
        let Ok((chunk, done)) = job else { return };
        if stop.load(Ordering::Relaxed) {
            // Drained, not mapped: the reader may be waiting for room.
            continue;
        }
        let mut results = Vec::with_capacity(chunk.ends.len());
        for (key, raw) in chunk.records() {
            let result = engine
                .open_raw(cf, key, raw)
                .map_err(E::from)
                .and_then(|value| map(key, &value));
            let failed = result.is_err();
            results.push(result);
            if failed {
                break;
            }
        }
        let _ = done.send(results);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::crypto::MasterKey;
    use crate::storage::{MemoryEngine, SealedEngine, WriteBatch};

    fn sealed_with(records: u32) -> SealedEngine {
        let inner: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let sealed = SealedEngine::open(inner, MasterKey::from_bytes([7; 32])).unwrap();
        let mut batch = WriteBatch::new();
        for i in 0..records {
            batch.put(Cf::Kv, i.to_be_bytes(), format!("value {i}"));
        }
        sealed.write(batch, false).unwrap();
        sealed
    }

    fn collect(engine: &dyn Engine, threads: usize) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        scan_map(
            engine,
            Cf::Kv,
            threads,
            |k, v| Ok::<_, Error>(format!("{k:?}={}", String::from_utf8_lossy(v))),
            |s| {
                out.push(s);
                Ok(())
            },
        )?;
        Ok(out)
    }

    #[test]
    fn the_same_records_in_the_same_order_on_any_number_of_threads() {
        for records in [0, 1, CHUNK_RECORDS as u32, 5 * CHUNK_RECORDS as u32 + 3] {
            let sealed = sealed_with(records);
            let plain = collect(&sealed, 1).unwrap();
            assert_eq!(plain.len(), records as usize);
            for threads in [2, 3, 8] {
                assert_eq!(
                    collect(&sealed, threads).unwrap(),
                    plain,
                    "{records} {threads}"
                );
            }
        }
    }

    #[test]
    fn the_first_error_stops_the_scan() {
        let sealed = sealed_with(3 * CHUNK_RECORDS as u32);
        // A record damaged underneath fails to open, on any thread.
        let victim = (CHUNK_RECORDS as u32 + 7).to_be_bytes();
        let mut raw = sealed.inner().get(Cf::Kv, &victim).unwrap().unwrap();
        raw[20] ^= 1;
        let mut batch = WriteBatch::new();
        batch.put(Cf::Kv, victim, raw);
        sealed.inner().write(batch, false).unwrap();
        for threads in [1, 2, 4] {
            let mut seen = 0;
            let result = scan_map(
                &sealed,
                Cf::Kv,
                threads,
                |_, _| Ok::<_, Error>(()),
                |()| {
                    seen += 1;
                    Ok(())
                },
            );
            assert!(matches!(result, Err(Error::Tampered(_))), "{threads}");
            assert_eq!(seen, CHUNK_RECORDS + 7, "{threads}");
        }
        // An error of the visitor stops it too.
        let mut seen = 0;
        let result = scan_map(
            &sealed_with(4 * CHUNK_RECORDS as u32),
            Cf::Kv,
            2,
            |_, _| Ok::<_, Error>(()),
            |()| {
                seen += 1;
                if seen == 100 {
                    return Err(Error::Engine("enough".into()));
                }
                Ok(())
            },
        );
        assert!(matches!(result, Err(Error::Engine(m)) if m == "enough"));
        assert_eq!(seen, 100);
    }
}
