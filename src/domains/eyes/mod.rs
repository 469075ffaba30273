//! The eye-gaze domain (the paper's first experiment): the `eye_sample` schema ([`rows`]), the
//! procedural eye generator ([`render`], kind `generate-eyes` in [`generate`]), the UnityEyes and
//! MPIIGaze ingesters ([`unityeyes`], [`mpiigaze`], reading `.mat` files with [`crate::mat`]; kinds in [`ingest`]), the `gaze`
//! task ([`task`]) and the pupil-centre measure of label preservation ([`pupil`]).
//!
//! **Gaze convention (the one used in every shard):** a unit 3-vector in the OpenCV camera frame of
//! the eye image — x to the image right, y down, z away from the camera — pointing where the eye
//! looks. Looking straight into the camera is `(0, 0, -1)`. `pitch = asin(-y)` (looking up is
//! positive) and `yaw = atan2(-x, -z)` (looking toward the image left is positive), in radians.
//! This is MPIIGaze's normalised convention; UnityEyes' `look_vec` converts as `(x, -y, z)` (Unity's camera frame is left-handed; this matches GazeML's tested conversion, pitch = asin(y), yaw = atan2(-x, -z)).
//!
//! Images are 55×35 (W×H) grayscale, as in the paper.

pub mod generate;
pub mod ingest;
pub mod mpiigaze;
pub mod pupil;
pub mod render;
pub mod rows;
pub mod task;
pub mod unityeyes;

/// Eye image width in pixels (the paper's 55×35 eye crops).
pub const EYE_W: u32 = 55;
/// Eye image height in pixels.
pub const EYE_H: u32 = 35;

/// One labelled eye sample before it is encoded into a shard row.
#[derive(Debug, Clone)]
pub struct EyeSample {
    /// 55×35 grayscale image.
    pub image: image::GrayImage,
    /// Unit gaze vector in the project convention (see the module docs).
    pub gaze: [f32; 3],
    /// Head pose as (pitch, yaw, roll) in degrees.
    pub head_pose: [f32; 3],
    /// Optional 2-D landmarks in image pixels, flattened `x0, y0, x1, y1, …`.
    pub landmarks: Option<Vec<f32>>,
}

/// `(pitch, yaw)` in radians of a gaze vector in the project convention.
pub fn pitch_yaw(g: [f32; 3]) -> (f32, f32) {
    let n = (g[0] * g[0] + g[1] * g[1] + g[2] * g[2])
        .sqrt()
        .max(f32::MIN_POSITIVE);
    let (x, y, z) = (g[0] / n, g[1] / n, g[2] / n);
    ((-y).clamp(-1.0, 1.0).asin(), (-x).atan2(-z))
}

/// Unit gaze vector from `(pitch, yaw)` in radians; inverse of [`pitch_yaw`].
pub fn from_pitch_yaw(pitch: f32, yaw: f32) -> [f32; 3] {
    [
        -pitch.cos() * yaw.sin(),
        -pitch.sin(),
        -pitch.cos() * yaw.cos(),
    ]
}

/// Angle between two gaze vectors in degrees (`acos` of the clamped cosine).
pub fn angular_error_deg(a: [f32; 3], b: [f32; 3]) -> f32 {
    let dot = a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
    let na = (a[0] * a[0] + a[1] * a[1] + a[2] * a[2]).sqrt();
    let nb = (b[0] * b[0] + b[1] * b[1] + b[2] * b[2]).sqrt();
    if na == 0.0 || nb == 0.0 {
        return f32::NAN;
    }
    (dot / (na * nb)).clamp(-1.0, 1.0).acos().to_degrees()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pitch_yaw_round_trip_and_signs() {
        let (p, y) = pitch_yaw([0.0, 0.0, -1.0]);
        assert!(p.abs() < 1e-6 && y.abs() < 1e-6);
        // Looking up (negative y in the camera frame) is positive pitch.
        assert!(pitch_yaw([0.0, -0.5, -0.8]).0 > 0.0);
        // Looking toward the image left (negative x) is positive yaw.
        assert!(pitch_yaw([-0.5, 0.0, -0.8]).1 > 0.0);
        for &(p, y) in &[(0.3f32, -0.2f32), (-0.5, 0.7), (0.0, 0.0)] {
            let g = from_pitch_yaw(p, y);
            let (p2, y2) = pitch_yaw(g);
            assert!((p - p2).abs() < 1e-5 && (y - y2).abs() < 1e-5);
        }
    }

    #[test]
    fn angular_error_of_known_vectors() {
        assert!((angular_error_deg([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]) - 90.0).abs() < 1e-4);
        assert!(angular_error_deg([0.0, 0.0, -1.0], [0.0, 0.0, -2.0]).abs() < 1e-3);
        assert!((angular_error_deg([1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]) - 180.0).abs() < 1e-3);
        let a = from_pitch_yaw(0.0, 0.0);
        let b = from_pitch_yaw(10f32.to_radians(), 0.0);
        assert!((angular_error_deg(a, b) - 10.0).abs() < 1e-3);
    }
}
