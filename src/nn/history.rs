//! The history buffer of refined images (Shrivastava et al., §2.3).
//!
//! The discriminator would otherwise only see the refiner's latest outputs and forget the
//! artefacts of earlier ones. The rule, for a D step with batch size `b`:
//! 1. if the buffer holds at least `b/2` images, D's "refined" half-batch is `b/2` images from
//!    the current refiner plus `b/2` sampled from the buffer; otherwise it is all current images;
//! 2. after the step, `b/2` current refined images go into the buffer: appended while it is not
//!    full, then each replaces a uniformly random entry.
//!
//! Images are kept on the host as flat `f32` (`channels × height × width`, values in `[-1, 1]`),
//! so the buffer is backend-independent and costs `capacity × c × h × w × 4` bytes (25,600 eye
//! images ≈ 197 MB). Sampling and replacement use a seeded `StdRng`; two public SimGAN
//! reimplementations shipped a buffer that silently stayed empty, hence the tests below.

use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::index;

use super::NnError;

/// Fixed-capacity store of earlier refined images (see the module docs for the rule).
#[derive(Debug, Clone)]
pub struct HistoryBuffer {
    capacity: usize,
    image_shape: [usize; 3],
    image_len: usize,
    data: Vec<f32>,
    len: usize,
    rng: StdRng,
    added: u64,
    replaced: u64,
}

impl HistoryBuffer {
    /// An empty buffer for `capacity` images of `[channels, height, width]`, seeded.
    pub fn new(capacity: usize, image_shape: [usize; 3], seed: u64) -> Self {
        Self {
            capacity,
            image_shape,
            image_len: image_shape.iter().product(),
            data: Vec::new(),
            len: 0,
            rng: StdRng::seed_from_u64(seed),
            added: 0,
            replaced: 0,
        }
    }

    /// Images currently stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No images stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of images.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether the buffer holds `capacity` images (from now on pushes replace entries).
    pub fn is_full(&self) -> bool {
        self.len >= self.capacity
    }

    /// `[channels, height, width]` of each image.
    pub fn image_shape(&self) -> [usize; 3] {
        self.image_shape
    }

    /// Images ever pushed (appended or replacing), and how many of those replaced an entry.
    pub fn counters(&self) -> (u64, u64) {
        (self.added, self.replaced)
    }

    /// Reseed the sampling generator (used on resume: `seed` is derived from the run seed and
    /// the step, so a resumed run is deterministic given its checkpoint).
    pub fn reseed(&mut self, seed: u64) {
        self.rng = StdRng::seed_from_u64(seed);
    }

    /// Whether a D step with half-batch `half` can take its history half from the buffer.
    pub fn can_sample(&self, half: usize) -> bool {
        half > 0 && self.len >= half
    }

    /// `n` distinct stored images, chosen uniformly at random, as one flat vector
    /// (`n × c × h × w`), or `None` when fewer than `n` are stored.
    pub fn sample(&mut self, n: usize) -> Option<Vec<f32>> {
        if n == 0 || self.len < n {
            return None;
        }
        let mut out = Vec::with_capacity(n * self.image_len);
        for i in index::sample(&mut self.rng, self.len, n).into_iter() {
            out.extend_from_slice(self.image(i));
        }
        Some(out)
    }

    /// The `i`-th stored image.
    pub fn image(&self, i: usize) -> &[f32] {
        &self.data[i * self.image_len..(i + 1) * self.image_len]
    }

    /// Add images given as one flat vector (`k × c × h × w`): appended while there is room,
    /// then each replaces a uniformly random entry. Returns how many were added.
    pub fn push(&mut self, images: &[f32]) -> Result<usize, NnError> {
        if self.image_len == 0 || !images.len().is_multiple_of(self.image_len) {
            return Err(NnError::Shape {
                context: "HistoryBuffer::push",
                message: format!(
                    "{} values is not a whole number of {:?} images",
                    images.len(),
                    self.image_shape
                ),
            });
        }
        if self.capacity == 0 {
            return Ok(0);
        }
        let k = images.len() / self.image_len;
        for img in images.chunks_exact(self.image_len) {
            if self.len < self.capacity {
                self.data.extend_from_slice(img);
                self.len += 1;
            } else {
                let i = self.rng.random_range(0..self.len);
                self.data[i * self.image_len..(i + 1) * self.image_len].copy_from_slice(img);
                self.replaced += 1;
            }
            self.added += 1;
        }
        Ok(k)
    }

    /// All stored images as one flat vector (for checkpoints).
    pub fn as_flat(&self) -> &[f32] {
        &self.data
    }

    /// Refill from a flat vector of stored images (checkpoint restore); extra images beyond
    /// the capacity are dropped.
    pub fn restore(&mut self, flat: Vec<f32>) -> Result<(), NnError> {
        self.data.clear();
        self.len = 0;
        self.push(&flat)?;
        self.added = 0;
        self.replaced = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image whose every pixel is `v` (so we can tell images apart).
    fn img(v: f32) -> Vec<f32> {
        vec![v; 6]
    }

    fn ids(flat: &[f32]) -> Vec<f32> {
        flat.chunks_exact(6).map(|c| c[0]).collect()
    }

    #[test]
    fn fills_until_capacity() {
        let mut h = HistoryBuffer::new(5, [1, 2, 3], 7);
        assert!(h.is_empty());
        assert!(!h.can_sample(1));
        assert!(h.sample(1).is_none());
        h.push(&[img(1.0), img(2.0)].concat()).unwrap();
        assert_eq!(h.len(), 2);
        h.push(&[img(3.0), img(4.0)].concat()).unwrap();
        assert_eq!(h.len(), 4);
        assert!(!h.is_full());
        h.push(&[img(5.0), img(6.0)].concat()).unwrap();
        assert_eq!(h.len(), 5, "never grows past capacity");
        assert!(h.is_full());
        assert_eq!(h.counters(), (6, 1));
        assert!(h.push(&[1.0; 5]).is_err(), "partial image rejected");
    }

    #[test]
    fn samples_come_from_the_buffer_and_are_distinct() {
        let mut h = HistoryBuffer::new(10, [1, 2, 3], 1);
        let stored: Vec<f32> = (0..8).map(|i| i as f32).collect();
        for v in &stored {
            h.push(&img(*v)).unwrap();
        }
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let s = ids(&h.sample(4).unwrap());
            assert_eq!(s.len(), 4);
            let distinct: std::collections::BTreeSet<i64> = s.iter().map(|v| *v as i64).collect();
            assert_eq!(distinct.len(), 4, "sampled without replacement");
            for v in s {
                assert!(stored.contains(&v), "sampled {v}, which was never stored");
                seen.insert(v as i64);
            }
        }
        assert_eq!(seen.len(), 8, "every stored image gets sampled eventually");
        assert!(h.sample(9).is_none(), "cannot sample more than stored");
    }

    #[test]
    fn full_buffer_gets_replaced_randomly() {
        let mut h = HistoryBuffer::new(20, [1, 2, 3], 3);
        for i in 0..20 {
            h.push(&img(i as f32)).unwrap();
        }
        assert!(h.is_full());
        // 40 new images into a full buffer of 20: old ones must be displaced at random
        // positions (not just the head or the tail), the length stays 20.
        for i in 100..140 {
            h.push(&img(i as f32)).unwrap();
        }
        assert_eq!(h.len(), 20);
        let now = ids(h.as_flat());
        let new_count = now.iter().filter(|v| **v >= 100.0).count();
        let old_count = now.iter().filter(|v| **v < 100.0).count();
        assert!(new_count >= 10, "replacement happened: {now:?}");
        assert!(
            old_count >= 1,
            "replacement is random, not FIFO of everything: {now:?}"
        );
        let new_positions: Vec<usize> = now
            .iter()
            .enumerate()
            .filter(|(_, v)| **v >= 100.0)
            .map(|(i, _)| i)
            .collect();
        assert!(new_positions.iter().any(|p| *p < 10) && new_positions.iter().any(|p| *p >= 10));
        assert_eq!(h.counters(), (60, 40));
    }

    #[test]
    fn same_seed_same_choices() {
        let mut a = HistoryBuffer::new(4, [1, 2, 3], 9);
        let mut b = HistoryBuffer::new(4, [1, 2, 3], 9);
        for i in 0..12 {
            a.push(&img(i as f32)).unwrap();
            b.push(&img(i as f32)).unwrap();
        }
        assert_eq!(a.as_flat(), b.as_flat());
        assert_eq!(a.sample(3), b.sample(3));
    }

    #[test]
    fn zero_capacity_stays_empty_without_error() {
        let mut h = HistoryBuffer::new(0, [1, 2, 3], 0);
        assert_eq!(h.push(&img(1.0)).unwrap(), 0);
        assert!(h.is_empty());
        assert!(!h.can_sample(1));
    }
}
