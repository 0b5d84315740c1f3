//! [`Loader`]: batches a dataset with parallel decoding and a prefetch thread; its order and
//! augmentation depend only on `(seed, epoch, index)`, so training can resume mid-epoch.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use rayon::prelude::*;

use super::dataset::{Dataset, Sample};
use super::error::DataError;
use super::rng::{Rng, STREAM_ORDER, STREAM_SAMPLE};

/// How many skipped-sample messages a [`Loader`] keeps (the count is unbounded).
pub const MAX_SKIP_MESSAGES: usize = 16;

/// A batch, already normalised with ImageNet mean/std. `pixels.len() == n*3*height*width`, NCHW.
/// `n` can be below the batch size when samples were skipped.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub pixels: Vec<f32>,
    pub n: usize,
    pub height: usize,
    pub width: usize,
    pub labels: Vec<u32>,
    /// `n*height*width`, 1 = object (only when every sample has a mask).
    pub masks: Option<Vec<u8>>,
    /// Dataset index of each sample.
    pub indices: Vec<usize>,
    /// Position of this batch in the epoch (what `start_batch` counts), stable even when a
    /// batch whose samples all failed is left out.
    pub batch_index: usize,
}

#[derive(Default)]
struct SkipLog {
    count: AtomicUsize,
    messages: Mutex<Vec<String>>,
}

/// Print a failed load once per process: the same corrupt file fails again in every epoch
/// and every evaluation, and one line naming it (with the decoder's reason) is enough.
fn warn_once(err: &DataError) {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let msg = err.to_string();
    let new = SEEN
        .get_or_init(Default::default)
        .lock()
        .map(|mut seen| seen.insert(msg.clone()))
        .unwrap_or(false);
    if new {
        eprintln!("warning: skipping {msg}");
    }
}

impl SkipLog {
    fn record(&self, err: &DataError) {
        warn_once(err);
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.messages.lock() {
            if m.len() < MAX_SKIP_MESSAGES {
                m.push(err.to_string());
            }
        }
    }
}

/// Batches over a dataset: order and augmentation are functions of `(seed, epoch, index)`,
/// samples of a batch are decoded in parallel (rayon), and a background thread keeps up to
/// `prefetch` batches ready. Samples that fail to load are skipped and counted.
pub struct Loader {
    dataset: Arc<dyn Dataset>,
    batch_size: usize,
    train: bool,
    seed: u64,
    prefetch: usize,
    skips: Arc<SkipLog>,
}

impl Loader {
    /// `batch_size` 0 is treated as 1; `prefetch` 0 loads synchronously in `next()`.
    pub fn new(
        dataset: Arc<dyn Dataset>,
        batch_size: usize,
        train: bool,
        seed: u64,
        prefetch: usize,
    ) -> Self {
        Loader {
            dataset,
            batch_size: batch_size.max(1),
            train,
            seed,
            prefetch,
            skips: Arc::new(SkipLog::default()),
        }
    }

    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Sample order of `epoch`: shuffled by `(seed, epoch)` when training, else sequential.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.train {
            Rng::derive(self.seed, &[STREAM_ORDER, epoch]).shuffle(&mut order);
        }
        order
    }

    /// Full batches only when training (drop_last), else the last partial batch too.
    pub fn batches_per_epoch(&self) -> usize {
        let len = self.dataset.len();
        if self.train {
            len / self.batch_size
        } else {
            len.div_ceil(self.batch_size)
        }
    }

    /// Iterate epoch `epoch` from batch `start_batch`; `epoch(e, k)` yields exactly what
    /// `epoch(e, 0).skip(k)` would. Dropping the iterator stops the prefetch thread.
    pub fn epoch(&self, epoch: u64, start_batch: usize) -> EpochIter {
        let end = self.batches_per_epoch();
        let start = start_batch.min(end);
        let sync = |producer| EpochIter {
            inner: Inner::Sync {
                producer,
                next: start,
                end,
            },
        };
        if self.prefetch == 0 {
            return sync(self.producer(epoch));
        }
        // Bounded channel: `prefetch - 1` queued plus one waiting in `send` = `prefetch` ready.
        let (tx, rx): (SyncSender<Batch>, Receiver<Batch>) =
            std::sync::mpsc::sync_channel(self.prefetch - 1);
        let producer = self.producer(epoch);
        let spawned = std::thread::Builder::new()
            .name("zerobias-loader".into())
            .spawn(move || {
                for b in start..end {
                    if let Some(batch) = producer.batch(b) {
                        if tx.send(batch).is_err() {
                            return; // the consumer dropped the iterator
                        }
                    }
                }
            });
        match spawned {
            Ok(handle) => EpochIter {
                inner: Inner::Threaded {
                    rx: Some(rx),
                    handle: Some(handle),
                },
            },
            // No thread to be had: load in `next()` instead (same batches, no overlap).
            Err(_) => sync(self.producer(epoch)),
        }
    }

    fn producer(&self, epoch: u64) -> Producer {
        Producer {
            dataset: Arc::clone(&self.dataset),
            order: self.order(epoch),
            batch_size: self.batch_size,
            train: self.train,
            seed: self.seed,
            epoch,
            skips: Arc::clone(&self.skips),
        }
    }

    /// Samples skipped so far (all epochs), each failed load counted once.
    pub fn skipped(&self) -> usize {
        self.skips.count.load(Ordering::Relaxed)
    }

    /// The first [`MAX_SKIP_MESSAGES`] skip reasons (each names the file).
    pub fn skip_messages(&self) -> Vec<String> {
        self.skips
            .messages
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }
}

struct Producer {
    dataset: Arc<dyn Dataset>,
    order: Vec<usize>,
    batch_size: usize,
    train: bool,
    seed: u64,
    epoch: u64,
    skips: Arc<SkipLog>,
}

impl Producer {
    /// Batch `b` of the epoch, or `None` if every one of its samples failed.
    fn batch(&self, b: usize) -> Option<Batch> {
        let lo = b.checked_mul(self.batch_size)?;
        let hi = (lo + self.batch_size).min(self.order.len());
        let ids = self.order.get(lo..hi)?;
        let (height, width) = self.dataset.image_size();
        let plane = height * width;
        let results: Vec<(usize, Result<Sample, DataError>)> = ids
            .par_iter()
            .map(|&idx| {
                let mut rng = Rng::derive(self.seed, &[STREAM_SAMPLE, self.epoch, idx as u64]);
                let r = self.dataset.get(idx, self.train, &mut rng).and_then(|s| {
                    if s.pixels.len() != 3 * plane
                        || s.mask.as_ref().is_some_and(|m| m.len() != plane)
                    {
                        Err(DataError::Shape(format!(
                            "sample {idx}: expected 3x{height}x{width} pixels{}, got {} values",
                            if s.mask.is_some() { " and mask" } else { "" },
                            s.pixels.len()
                        )))
                    } else {
                        Ok(s)
                    }
                });
                (idx, r)
            })
            .collect();

        let mut pixels = Vec::with_capacity(ids.len() * 3 * plane);
        let mut labels = Vec::with_capacity(ids.len());
        let mut indices = Vec::with_capacity(ids.len());
        let mut masks: Option<Vec<u8>> = Some(Vec::with_capacity(ids.len() * plane));
        for (idx, r) in results {
            match r {
                Ok(s) => {
                    pixels.extend_from_slice(&s.pixels);
                    labels.push(s.label);
                    indices.push(idx);
                    masks = match (masks, s.mask) {
                        (Some(mut all), Some(m)) => {
                            all.extend_from_slice(&m);
                            Some(all)
                        }
                        _ => None,
                    };
                }
                Err(e) => self.skips.record(&e),
            }
        }
        if indices.is_empty() {
            return None;
        }
        Some(Batch {
            pixels,
            n: indices.len(),
            height,
            width,
            labels,
            masks,
            indices,
            batch_index: b,
        })
    }
}

enum Inner {
    Sync {
        producer: Producer,
        next: usize,
        end: usize,
    },
    Threaded {
        rx: Option<Receiver<Batch>>,
        handle: Option<JoinHandle<()>>,
    },
}

/// The batches of one epoch (see [`Loader::epoch`]).
pub struct EpochIter {
    inner: Inner,
}

impl Iterator for EpochIter {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        match &mut self.inner {
            Inner::Sync {
                producer,
                next,
                end,
            } => {
                while *next < *end {
                    let b = *next;
                    *next += 1;
                    if let Some(batch) = producer.batch(b) {
                        return Some(batch);
                    }
                }
                None
            }
            Inner::Threaded { rx, handle } => {
                if let Some(batch) = rx.as_ref().and_then(|r| r.recv().ok()) {
                    return Some(batch);
                }
                // Channel closed: the epoch is done, or the producer panicked (a bug in a
                // Dataset implementation), which is re-raised here rather than hidden.
                rx.take();
                if let Some(h) = handle.take() {
                    if let Err(panic) = h.join() {
                        std::panic::resume_unwind(panic);
                    }
                }
                None
            }
        }
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        if let Inner::Threaded { rx, handle } = &mut self.inner {
            // Closing the receiver first makes the producer's next `send` fail, so it exits.
            rx.take();
            if let Some(h) = handle.take() {
                let _ = h.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::Synthetic;

    #[test]
    fn loader_resume_reproduces_batches() {
        let ds: Arc<dyn Dataset> = Arc::new(Synthetic::new(50, 32, 10, 1).unwrap());
        let loader = Loader::new(Arc::clone(&ds), 8, true, 99, 2);
        assert_eq!(loader.batches_per_epoch(), 6);
        let full: Vec<Batch> = loader.epoch(3, 0).collect();
        assert_eq!(full.len(), 6);
        let resumed: Vec<Batch> = loader.epoch(3, 4).collect();
        assert_eq!(resumed, full[4..].to_vec());
        assert_eq!(resumed[0].batch_index, 4);

        // Synchronous loading yields the same batches as the prefetching thread.
        let sync = Loader::new(Arc::clone(&ds), 8, true, 99, 0);
        assert_eq!(sync.epoch(3, 0).collect::<Vec<_>>(), full);

        // Other epochs reorder; every sample at most once per epoch.
        let other: Vec<usize> = loader.epoch(4, 0).flat_map(|b| b.indices).collect();
        let this: Vec<usize> = full.iter().flat_map(|b| b.indices.clone()).collect();
        assert_ne!(this, other);
        let mut sorted = this.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 48);
        let b = &full[0];
        assert_eq!(b.masks.as_ref().unwrap().len(), 8 * 32 * 32);

        // Dropping a half-consumed iterator stops its thread cleanly.
        let mut it = loader.epoch(5, 0);
        assert!(it.next().is_some());
        drop(it);
        assert_eq!(loader.epoch(3, 100).count(), 0);
        assert_eq!(loader.skipped(), 0);

        // Eval: sequential order and the final partial batch.
        let eval = Loader::new(ds, 8, false, 0, 1);
        assert_eq!(eval.batches_per_epoch(), 7);
        let idx: Vec<usize> = eval.epoch(0, 0).flat_map(|b| b.indices).collect();
        assert_eq!(idx, (0..50).collect::<Vec<_>>());
    }
}
