//! MPIIGaze (real eyes): parse one `Data/Normalized/pXX/dayYY.mat` into labelled 55×35 samples,
//! and parse the evaluation-subset lists `Evaluation Subset/sample list for eye image/pXX.txt`.
//! Pure functions on bytes; the ingest stage owns the I/O.
//!
//! **Layout** (MATLAB v5, read with [`super::mat`]): struct `data` with fields `left` and `right`,
//! each a struct with `gaze` (N×3), `image` (N×36×60 uint8, column-major: element `(n, r, c)` at
//! `n + N·(r + 36·c)`) and `pose` (N×3 Rodrigues head rotation); a cell `filenames` (N names such as
//! `0001.jpg`, top-level variable or `data.filenames`, optional; a char matrix is also accepted).
//!
//! **Gaze.** MPIIGaze's normalised gaze is already the project convention (OpenCV camera frame,
//! `pitch = asin(−y)`, `yaw = atan2(−x, −z)`); it is only normalised.
//!
//! **Head pose.** The Rodrigues vector gives a rotation matrix `R` (head frame → normalised camera
//! frame; identity = frontal). Its third column is the head's z axis, and
//! `pitch = asin(R₁₂)`, `yaw = atan2(R₀₂, R₂₂)` — the conversion of Zhang et al. and
//! pytorch_mpiigaze — with `roll = atan2(R₁₀, R₁₁)`, i.e. `R = R_y(yaw)·R_x(−pitch)·R_z(roll)`.
//! Degrees.
//!
//! **Right eyes.** With [`MpiiOptions::flip_right`] (the literature's convention) a right eye is
//! mirrored horizontally so it looks like a left eye: image columns reversed, gaze `x` negated
//! (yaw negated), and the head rotation mirrored the same way (`M·R·M`, `M = diag(−1, 1, 1)`), which
//! keeps pitch and negates yaw and roll.

use std::fmt;

use image::GrayImage;
use rand::{Rng, SeedableRng};

use super::{EYE_H, EYE_W, EyeSample};
use crate::mat::{self, MatError, MatValue, NumericData};

/// MPIIGaze normalised eye image width.
pub const MPII_W: usize = 60;
/// MPIIGaze normalised eye image height.
pub const MPII_H: usize = 36;

/// Which eye.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Eye {
    Left,
    Right,
}

impl Eye {
    /// `"left"` or `"right"`, as in the evaluation lists and the `data` field names.
    pub fn as_str(self) -> &'static str {
        match self {
            Eye::Left => "left",
            Eye::Right => "right",
        }
    }
}

impl fmt::Display for Eye {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Options for [`parse_day`].
#[derive(Debug, Clone)]
pub struct MpiiOptions {
    /// Mirror right eyes into left-eye form (see the module docs). Default: true.
    pub flip_right: bool,
}

impl Default for MpiiOptions {
    fn default() -> Self {
        MpiiOptions { flip_right: true }
    }
}

/// One MPIIGaze eye sample and where it came from.
#[derive(Debug, Clone)]
pub struct MpiiSample {
    /// `pXX`.
    pub person: String,
    /// `dayYY`.
    pub day: String,
    pub eye: Eye,
    /// Row within the day file (0-based).
    pub index: usize,
    /// `filenames` entry for the row, if the file has them (`0001.jpg`).
    pub filename: Option<String>,
    /// Whether the sample was mirrored ([`MpiiOptions::flip_right`]).
    pub flipped: bool,
    /// 55×35 image, unit gaze, head pose (pitch, yaw, roll) degrees; no landmarks.
    pub sample: EyeSample,
}

#[derive(Debug, thiserror::Error)]
pub enum MpiiError {
    #[error("not a readable MAT-file: {0}")]
    Mat(MatError),
    #[error("missing variable or field `{0}`")]
    Missing(String),
    #[error("`{field}`: expected {expected}, got {got}")]
    Shape {
        field: String,
        expected: String,
        got: String,
    },
    #[error("`{field}` row {row}: {problem}")]
    BadRow {
        field: String,
        row: usize,
        problem: String,
    },
    #[error("`filenames`: {0}")]
    Filenames(String),
    #[error("evaluation list line {line}: {problem}: {text:?}")]
    EvalLine {
        line: usize,
        text: String,
        problem: String,
    },
}

/// Parse one day file of person `person` (`pXX`) and day `day` (`dayYY`): all left-eye samples in
/// row order, then all right-eye samples.
pub fn parse_day(
    bytes: &[u8],
    person: &str,
    day: &str,
    opts: &MpiiOptions,
) -> Result<Vec<MpiiSample>, MpiiError> {
    let vars = mat::read_mat(bytes).map_err(MpiiError::Mat)?;
    let data = mat::find_var(&vars, "data").ok_or_else(|| MpiiError::Missing("data".into()))?;
    scalar_struct(data, "data")?;
    let filenames = match mat::find_var(&vars, "filenames").or_else(|| data.field("filenames")) {
        Some(v) => Some(parse_filenames(v)?),
        None => None,
    };
    let mut out = Vec::new();
    for eye in [Eye::Left, Eye::Right] {
        let path = format!("data.{eye}");
        let e = data
            .field(eye.as_str())
            .ok_or_else(|| MpiiError::Missing(path.clone()))?;
        scalar_struct(e, &path)?;
        let field = |name: &str| {
            e.field(name)
                .ok_or_else(|| MpiiError::Missing(format!("{path}.{name}")))
        };

        let image = field("image")?;
        let pixels = match image {
            MatValue::Numeric {
                dims,
                data: NumericData::U8(px),
            } if dims.len() == 3 && dims[1] == MPII_H && dims[2] == MPII_W => px,
            other => {
                return Err(shape(
                    &format!("{path}.image"),
                    "N×36×60 uint8".into(),
                    other,
                ));
            }
        };
        let n = image.dims()[0];
        if pixels.len() != n * MPII_H * MPII_W {
            return Err(shape(
                &format!("{path}.image"),
                format!("{} bytes", n * MPII_H * MPII_W),
                image,
            ));
        }
        let gaze = rows3(field("gaze")?, &format!("{path}.gaze"), n)?;
        let pose = rows3(field("pose")?, &format!("{path}.pose"), n)?;
        if let Some(f) = &filenames
            && f.len() != n
        {
            return Err(MpiiError::Filenames(format!(
                "{} entries, but `{path}` has {n} samples",
                f.len()
            )));
        }
        let flip = eye == Eye::Right && opts.flip_right;
        for row in 0..n {
            let bad = |field: &str, problem: String| MpiiError::BadRow {
                field: format!("{path}.{field}"),
                row,
                problem,
            };
            let g = gaze[row];
            let norm = (g[0] * g[0] + g[1] * g[1] + g[2] * g[2]).sqrt();
            if !norm.is_finite() || norm == 0.0 {
                return Err(bad("gaze", format!("{g:?} is not a direction")));
            }
            let sx = if flip { -1.0 } else { 1.0 };
            let unit = [
                (sx * g[0] / norm) as f32,
                (g[1] / norm) as f32,
                (g[2] / norm) as f32,
            ];
            let r = pose[row];
            if !r.iter().all(|x| x.is_finite()) {
                return Err(bad("pose", format!("{r:?} is not finite")));
            }
            let [p, y, ro] = rodrigues_to_pitch_yaw_roll(r);
            let head_pose = [p as f32, (sx * y) as f32, (sx * ro) as f32];
            let raw = raw_image(pixels, n, row, flip);
            out.push(MpiiSample {
                person: person.to_string(),
                day: day.to_string(),
                eye,
                index: row,
                filename: filenames.as_ref().map(|f| f[row].clone()),
                flipped: flip,
                sample: EyeSample {
                    image: crate::resample::resize_triangle(&raw, EYE_W, EYE_H),
                    gaze: unit,
                    head_pose,
                    landmarks: None,
                },
            });
        }
    }
    Ok(out)
}

fn shape(field: &str, expected: String, got: &MatValue) -> MpiiError {
    MpiiError::Shape {
        field: field.to_string(),
        expected,
        got: got.describe(),
    }
}

fn scalar_struct(v: &MatValue, path: &str) -> Result<(), MpiiError> {
    match v {
        MatValue::Struct { dims, .. } if dims.iter().product::<usize>() == 1 => Ok(()),
        other => Err(shape(path, "1×1 struct".into(), other)),
    }
}

/// An N×3 numeric array (any class) as rows.
fn rows3(v: &MatValue, field: &str, n: usize) -> Result<Vec<[f64; 3]>, MpiiError> {
    match v {
        MatValue::Numeric { dims, data }
            if dims.len() == 2 && dims[0] == n && dims[1] == 3 && data.len() == 3 * n =>
        {
            let d = data.to_f64();
            Ok((0..n).map(|i| [d[i], d[i + n], d[i + 2 * n]]).collect())
        }
        other => Err(shape(
            field,
            format!("{n}×3 numeric (N = {n} from the image)"),
            other,
        )),
    }
}

fn parse_filenames(v: &MatValue) -> Result<Vec<String>, MpiiError> {
    match v {
        MatValue::Cell { items, .. } => items
            .iter()
            .enumerate()
            .map(|(k, item)| match item {
                MatValue::Char { text, .. } => Ok(text.trim_end().to_string()),
                other => Err(MpiiError::Filenames(format!(
                    "cell {} is {}, expected char",
                    k + 1,
                    other.describe()
                ))),
            })
            .collect(),
        MatValue::Char { .. } => Ok(v
            .char_rows()
            .unwrap_or_default()
            .iter()
            .map(|s| s.trim_end().to_string())
            .collect()),
        other => Err(MpiiError::Filenames(format!(
            "expected a cell of names or a char matrix, got {}",
            other.describe()
        ))),
    }
}

/// Sample `n` of `count` from column-major N×36×60 pixels as a 60×36 image, optionally mirrored.
fn raw_image(pixels: &[u8], count: usize, n: usize, flip: bool) -> GrayImage {
    GrayImage::from_fn(MPII_W as u32, MPII_H as u32, |x, y| {
        let c = if flip {
            MPII_W - 1 - x as usize
        } else {
            x as usize
        };
        image::Luma([pixels[n + count * (y as usize + MPII_H * c)]])
    })
}

/// Rotation matrix of a Rodrigues vector (axis × angle in radians).
fn rodrigues(r: [f64; 3]) -> [[f64; 3]; 3] {
    let t = (r[0] * r[0] + r[1] * r[1] + r[2] * r[2]).sqrt();
    if t < 1e-12 {
        return [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    }
    let [x, y, z] = r.map(|v| v / t);
    let (s, c) = t.sin_cos();
    let v = 1.0 - c;
    [
        [c + x * x * v, x * y * v - z * s, x * z * v + y * s],
        [y * x * v + z * s, c + y * y * v, y * z * v - x * s],
        [z * x * v - y * s, z * y * v + x * s, c + z * z * v],
    ]
}

/// Head pose `(pitch, yaw, roll)` in degrees from a Rodrigues rotation vector (see the module docs).
pub fn rodrigues_to_pitch_yaw_roll(r: [f64; 3]) -> [f64; 3] {
    let m = rodrigues(r);
    [
        m[1][2].clamp(-1.0, 1.0).asin().to_degrees(),
        m[0][2].atan2(m[2][2]).to_degrees(),
        m[1][0].atan2(m[1][1]).to_degrees(),
    ]
}

/// Parse an evaluation list: lines `dayXX/NNNN.jpg left|right` (blank lines ignored).
pub fn parse_eval_list(text: &str) -> Result<Vec<(String, String, Eye)>, MpiiError> {
    let mut out = Vec::new();
    for (k, raw) in text.lines().enumerate() {
        let line = raw.trim().trim_start_matches('\u{feff}');
        if line.is_empty() {
            continue;
        }
        let bad = |problem: &str| MpiiError::EvalLine {
            line: k + 1,
            text: raw.to_string(),
            problem: problem.to_string(),
        };
        let mut parts = line.split_whitespace();
        let (Some(path), Some(side), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected `dayXX/NNNN.jpg left|right`"));
        };
        let (day, file) = path
            .split_once('/')
            .ok_or_else(|| bad("expected `dayXX/NNNN.jpg`"))?;
        let digits = day.strip_prefix("day").unwrap_or("");
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("day should be `dayXX`"));
        }
        if file.contains('/') || file.len() <= 4 || !file.ends_with(".jpg") {
            return Err(bad("file should be `NNNN.jpg`"));
        }
        let eye = match side {
            "left" => Eye::Left,
            "right" => Eye::Right,
            _ => return Err(bad("eye should be `left` or `right`")),
        };
        out.push((day.to_string(), file.to_string(), eye));
    }
    Ok(out)
}

/// **Test-fixture helper**: one eye's arrays of a day file, row by row.
#[derive(Debug, Clone, PartialEq)]
pub struct FixtureEye {
    /// Unit gaze vectors, project convention.
    pub gaze: Vec<[f64; 3]>,
    /// Rodrigues head rotations.
    pub pose: Vec<[f64; 3]>,
    /// 36×60 images, row-major.
    pub images: Vec<Vec<u8>>,
}

/// **Test-fixture helper**: `n` deterministic, plausible samples (gaze within ±17°/±23°, small head
/// rotations, a gradient with a dark iris placed by the gaze).
pub fn fixture_eye(n: usize, seed: u64) -> FixtureEye {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut fx = FixtureEye {
        gaze: Vec::new(),
        pose: Vec::new(),
        images: Vec::new(),
    };
    for _ in 0..n {
        let (pitch, yaw) = (
            rng.random_range(-0.3..0.3f64),
            rng.random_range(-0.4..0.4f64),
        );
        fx.gaze.push([
            -pitch.cos() * yaw.sin(),
            -pitch.sin(),
            -pitch.cos() * yaw.cos(),
        ]);
        fx.pose.push([
            rng.random_range(-0.3..0.3),
            rng.random_range(-0.3..0.3),
            rng.random_range(-0.1..0.1),
        ]);
        let base = rng.random_range(100..160u32);
        let (ic, ir) = (30.0 - 25.0 * yaw, 18.0 - 20.0 * pitch);
        fx.images.push(
            (0..MPII_H * MPII_W)
                .map(|k| {
                    let (r, c) = ((k / MPII_W) as f64, (k % MPII_W) as f64);
                    if (r - ir).powi(2) + (c - ic).powi(2) < 49.0 {
                        30
                    } else {
                        (base + (r as u32) + (c as u32) / 2) as u8
                    }
                })
                .collect(),
        );
    }
    fx
}

/// **Test-fixture helper**: the variables of a day file with the real layout (`data.left/right.
/// {gaze, image, pose}`, optional top-level `filenames` cell), for [`mat::write_mat`].
pub fn fixture_day_vars(
    left: &FixtureEye,
    right: &FixtureEye,
    filenames: Option<&[String]>,
) -> Vec<(String, MatValue)> {
    let eye = |e: &FixtureEye| {
        let n = e.images.len();
        let col3 = |rows: &[[f64; 3]]| MatValue::Numeric {
            dims: vec![rows.len(), 3],
            data: NumericData::F64(
                (0..3)
                    .flat_map(|j| rows.iter().map(move |r| r[j]))
                    .collect(),
            ),
        };
        let mut px = vec![0u8; n * MPII_H * MPII_W];
        for (i, img) in e.images.iter().enumerate() {
            for (k, &v) in img.iter().enumerate().take(MPII_H * MPII_W) {
                px[i + n * (k / MPII_W + MPII_H * (k % MPII_W))] = v;
            }
        }
        MatValue::scalar_struct(vec![
            ("gaze".into(), col3(&e.gaze)),
            (
                "image".into(),
                MatValue::Numeric {
                    dims: vec![n, MPII_H, MPII_W],
                    data: NumericData::U8(px),
                },
            ),
            ("pose".into(), col3(&e.pose)),
        ])
    };
    let mut vars = vec![(
        "data".to_string(),
        MatValue::scalar_struct(vec![
            ("left".into(), eye(left)),
            ("right".into(), eye(right)),
        ]),
    )];
    if let Some(f) = filenames {
        vars.push(("filenames".into(), MatValue::cell_of_strings(f)));
    }
    vars
}

/// **Test-fixture helper**: a compressed v5 day file with `n_left` and `n_right` samples
/// ([`fixture_eye`] with seeds `seed` and `seed + 1`), and `filenames` `0001.jpg`… when
/// `n_left == n_right` (the real files have one list for both eyes).
pub fn fixture_day_mat(n_left: usize, n_right: usize, seed: u64) -> Vec<u8> {
    let names: Vec<String> = (1..=n_left).map(|k| format!("{k:04}.jpg")).collect();
    let filenames = (n_left == n_right).then_some(names.as_slice());
    mat::write_mat(
        &fixture_day_vars(
            &fixture_eye(n_left, seed),
            &fixture_eye(n_right, seed.wrapping_add(1)),
            filenames,
        ),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domains::eyes::pitch_yaw;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|k| format!("{k:04}.jpg")).collect()
    }

    fn parse(vars: &[(String, MatValue)], flip_right: bool) -> Result<Vec<MpiiSample>, MpiiError> {
        parse_day(
            &mat::write_mat(vars, true),
            "p03",
            "day07",
            &MpiiOptions { flip_right },
        )
    }

    #[test]
    fn day_file_round_trips() {
        let (left, right) = (fixture_eye(3, 1), fixture_eye(2, 2));
        let out = parse(&fixture_day_vars(&left, &right, None), false).unwrap();
        assert_eq!(out.len(), 5);
        for (s, (eye, index)) in out.iter().zip([
            (Eye::Left, 0),
            (Eye::Left, 1),
            (Eye::Left, 2),
            (Eye::Right, 0),
            (Eye::Right, 1),
        ]) {
            assert_eq!(
                (s.person.as_str(), s.day.as_str(), s.eye, s.index, s.flipped),
                ("p03", "day07", eye, index, false)
            );
            let fx = if eye == Eye::Left { &left } else { &right };
            let g = fx.gaze[index].map(|v| v as f32);
            assert!((0..3).all(|k| (s.sample.gaze[k] - g[k]).abs() < 1e-6));
            let hp = rodrigues_to_pitch_yaw_roll(fx.pose[index]).map(|v| v as f32);
            assert_eq!(s.sample.head_pose, hp);
            let raw = GrayImage::from_raw(60, 36, fx.images[index].clone()).unwrap();
            assert_eq!(
                s.sample.image,
                image::imageops::resize(&raw, EYE_W, EYE_H, image::imageops::FilterType::Triangle)
            );
            assert_eq!(s.filename, None);
            assert!(s.sample.landmarks.is_none());
        }
        let out = parse_day(
            &fixture_day_mat(2, 2, 9),
            "p00",
            "day01",
            &MpiiOptions::default(),
        )
        .unwrap();
        assert_eq!(
            out.iter()
                .map(|s| s.filename.clone().unwrap())
                .collect::<Vec<_>>(),
            [names(2), names(2)].concat()
        );
        // Unequal eye counts: no filenames written.
        assert_eq!(
            parse_day(
                &fixture_day_mat(3, 1, 9),
                "p00",
                "day01",
                &MpiiOptions::default()
            )
            .unwrap()
            .len(),
            4
        );
    }

    /// Element (n, r, c) of the N×36×60 array lives at n + N·(r + 36·c).
    #[test]
    fn image_layout_is_column_major() {
        let n = 2;
        let mut px = vec![0u8; n * 36 * 60];
        for r in 0..36 {
            for c in 0..60 {
                px[n * (r + 36 * c)] = (r * 7) as u8; // sample 0 encodes the row
                px[1 + n * (r + 36 * c)] = (c * 4) as u8; // sample 1 encodes the column
            }
        }
        let (a, b, bf) = (
            raw_image(&px, n, 0, false),
            raw_image(&px, n, 1, false),
            raw_image(&px, n, 1, true),
        );
        for (x, y) in [(0u32, 0u32), (59, 0), (0, 35), (17, 23), (59, 35)] {
            assert_eq!(a.get_pixel(x, y)[0], (y * 7) as u8);
            assert_eq!(b.get_pixel(x, y)[0], (x * 4) as u8);
            assert_eq!(bf.get_pixel(x, y)[0], ((59 - x) * 4) as u8);
        }
        // And the fixture writer uses the same layout end to end.
        let mut fx = fixture_eye(2, 3);
        fx.images[1] = (0..36 * 60).map(|k| ((k % 60) * 4) as u8).collect();
        let vars = fixture_day_vars(&fx, &fx, None);
        let MatValue::Struct { fields, .. } = &vars[0].1 else {
            panic!()
        };
        let left = &fields[0].1[0];
        let Some(MatValue::Numeric {
            data: NumericData::U8(px),
            ..
        }) = left.field("image")
        else {
            panic!()
        };
        assert_eq!(
            raw_image(px, 2, 1, false),
            GrayImage::from_fn(60, 36, |x, _| image::Luma([(x * 4) as u8]))
        );
    }

    #[test]
    fn right_eyes_flip() {
        let (left, right) = (fixture_eye(2, 4), fixture_eye(2, 5));
        let vars = fixture_day_vars(&left, &right, Some(&names(2)));
        let plain = parse(&vars, false).unwrap();
        let flipped = parse(&vars, true).unwrap();
        for (p, f) in plain.iter().zip(&flipped) {
            if p.eye == Eye::Left {
                assert!(
                    !f.flipped
                        && f.sample.gaze == p.sample.gaze
                        && f.sample.image == p.sample.image
                );
                continue;
            }
            assert!(f.flipped && f.filename == p.filename);
            let (g, h) = (p.sample.gaze, f.sample.gaze);
            assert_eq!(h, [-g[0], g[1], g[2]]);
            let ((pp, py), (fp, fy)) = (pitch_yaw(g), pitch_yaw(h));
            assert!((pp - fp).abs() < 1e-6 && (py + fy).abs() < 1e-6);
            let (a, b) = (p.sample.head_pose, f.sample.head_pose);
            assert_eq!(b, [a[0], -a[1], -a[2]]);
            for (x, y, px) in f.sample.image.enumerate_pixels() {
                let q = p.sample.image.get_pixel(EYE_W - 1 - x, y)[0];
                assert!(px[0].abs_diff(q) <= 1, "({x}, {y}): {} vs {q}", px[0]);
            }
        }
    }

    #[test]
    fn rodrigues_conversion() {
        let close = |a: [f64; 3], b: [f64; 3]| (0..3).all(|k| (a[k] - b[k]).abs() < 1e-9);
        assert!(close(rodrigues_to_pitch_yaw_roll([0.0; 3]), [0.0; 3]));
        assert!(close(
            rodrigues_to_pitch_yaw_roll([0.0, 0.3, 0.0]),
            [0.0, 0.3f64.to_degrees(), 0.0]
        ));
        assert!(close(
            rodrigues_to_pitch_yaw_roll([-0.2, 0.0, 0.0]),
            [0.2f64.to_degrees(), 0.0, 0.0]
        ));
        assert!(close(
            rodrigues_to_pitch_yaw_roll([0.0, 0.0, 0.1]),
            [0.0, 0.0, 0.1f64.to_degrees()]
        ));
        // General case: R = R_y(yaw)·R_x(−pitch)·R_z(roll) rebuilt from the angles matches R.
        let mul = |a: [[f64; 3]; 3], b: [[f64; 3]; 3]| {
            let mut m = [[0.0; 3]; 3];
            for i in 0..3 {
                for j in 0..3 {
                    m[i][j] = (0..3).map(|k| a[i][k] * b[k][j]).sum();
                }
            }
            m
        };
        for r in [[0.1, -0.2, 0.05], [-0.3, 0.25, -0.1], [0.2, 0.2, 0.2]] {
            let [p, y, ro] = rodrigues_to_pitch_yaw_roll(r).map(f64::to_radians);
            let m = mul(
                mul(rodrigues([0.0, y, 0.0]), rodrigues([-p, 0.0, 0.0])),
                rodrigues([0.0, 0.0, ro]),
            );
            let want = rodrigues(r);
            assert!(
                (0..9).all(|k| (m[k / 3][k % 3] - want[k / 3][k % 3]).abs() < 1e-9),
                "{r:?}"
            );
        }
    }

    #[test]
    fn bad_day_files_name_the_field() {
        let (left, right) = (fixture_eye(2, 6), fixture_eye(2, 7));
        let good = fixture_day_vars(&left, &right, Some(&names(2)));
        // Rebuild `data` with one eye struct field replaced (or removed with `None`).
        let edit = |eye: usize, name: &str, v: Option<MatValue>| {
            let mut vars = good.clone();
            let MatValue::Struct { fields, .. } = &mut vars[0].1 else {
                unreachable!()
            };
            let MatValue::Struct { fields: ef, .. } = &mut fields[eye].1[0] else {
                unreachable!()
            };
            match v {
                Some(v) => ef.iter_mut().find(|(n, _)| n == name).unwrap().1[0] = v,
                None => ef.retain(|(n, _)| n != name),
            }
            vars
        };
        let err = |vars: &[(String, MatValue)]| parse(vars, true).unwrap_err();
        let field_of = |e: &MpiiError| match e {
            MpiiError::Shape { field, .. } | MpiiError::BadRow { field, .. } => field.clone(),
            MpiiError::Missing(f) => f.clone(),
            other => panic!("unexpected {other}"),
        };

        assert!(matches!(
            parse_day(b"not a mat file", "p00", "day01", &MpiiOptions::default()),
            Err(MpiiError::Mat(_))
        ));
        assert_eq!(field_of(&err(&good[1..])), "data");
        assert_eq!(
            field_of(&err(&[("data".into(), MatValue::char_row("x"))])),
            "data"
        );
        let e = err(&edit(
            0,
            "image",
            Some(MatValue::Numeric {
                dims: vec![2, 36, 60],
                data: NumericData::F64(vec![0.0; 2 * 36 * 60]),
            }),
        ));
        assert_eq!(field_of(&e), "data.left.image");
        assert!(
            e.to_string()
                .contains("expected N×36×60 uint8, got double 2×36×60"),
            "{e}"
        );
        let e = err(&edit(
            1,
            "image",
            Some(MatValue::Numeric {
                dims: vec![2, 60, 36],
                data: NumericData::U8(vec![0; 2 * 36 * 60]),
            }),
        ));
        assert_eq!(field_of(&e), "data.right.image");
        let e = err(&edit(
            0,
            "gaze",
            Some(MatValue::Numeric {
                dims: vec![2, 2],
                data: NumericData::F64(vec![0.0; 4]),
            }),
        ));
        assert_eq!(field_of(&e), "data.left.gaze");
        let e = err(&edit(
            1,
            "pose",
            Some(MatValue::Numeric {
                dims: vec![3, 3],
                data: NumericData::F64(vec![0.0; 9]),
            }),
        ));
        assert_eq!(field_of(&e), "data.right.pose");
        assert_eq!(field_of(&err(&edit(1, "pose", None))), "data.right.pose");

        let mut nan = right.clone();
        nan.gaze[1][2] = f64::NAN;
        let e = err(&fixture_day_vars(&left, &nan, None));
        assert!(
            matches!(&e, MpiiError::BadRow { field, row: 1, .. } if field == "data.right.gaze"),
            "{e}"
        );
        let mut zero = left.clone();
        zero.gaze[0] = [0.0; 3];
        assert!(matches!(
            err(&fixture_day_vars(&zero, &right, None)),
            MpiiError::BadRow { row: 0, .. }
        ));
        let mut inf = left.clone();
        inf.pose[1][0] = f64::INFINITY;
        let e = err(&fixture_day_vars(&inf, &right, None));
        assert!(
            matches!(&e, MpiiError::BadRow { field, row: 1, .. } if field == "data.left.pose"),
            "{e}"
        );

        assert!(matches!(
            err(&fixture_day_vars(&left, &right, Some(&names(3)))),
            MpiiError::Filenames(_)
        ));
        let mut bad_names = good.clone();
        bad_names[1].1 = MatValue::Cell {
            dims: vec![2, 1],
            items: vec![MatValue::char_row("a"), MatValue::cell_of_strings(&["b"])],
        };
        assert!(matches!(err(&bad_names), MpiiError::Filenames(_)));
        // A char-matrix `filenames` is accepted.
        let mut char_names = good.clone();
        char_names[1].1 = MatValue::Char {
            dims: vec![2, 8],
            text: "0001.jpg0002.jpg".into(),
        };
        let out = parse(&char_names, true).unwrap();
        assert_eq!(out[1].filename.as_deref(), Some("0002.jpg"));
    }

    #[test]
    fn eval_lists() {
        let text = "day08/0069.jpg left\r\nday08/0070.jpg right\n\n  day10/1234.jpg   left  \n";
        let got = parse_eval_list(text).unwrap();
        assert_eq!(
            got,
            vec![
                ("day08".to_string(), "0069.jpg".to_string(), Eye::Left),
                ("day08".to_string(), "0070.jpg".to_string(), Eye::Right),
                ("day10".to_string(), "1234.jpg".to_string(), Eye::Left),
            ]
        );
        for (bad, line) in [
            ("day08/0069.jpg left\nday08/0070.jpg\n", 2),
            ("day08/0069.jpg up\n", 1),
            ("\n\nmonday/0069.jpg left\n", 3),
            ("day08-0069.jpg left\n", 1),
            ("day08/0069.png left\n", 1),
            ("day08/0069.jpg left extra\n", 1),
            ("dayX/0069.jpg right\n", 1),
        ] {
            assert!(
                matches!(parse_eval_list(bad), Err(MpiiError::EvalLine { line: l, .. }) if l == line),
                "{bad:?}"
            );
        }
    }
}
