//! UnityEyes labels and eye crops: parse a render's `N.json`, cut the 55×35 grayscale eye image out
//! of its `N.jpg`, and build an [`EyeSample`]. Pure functions on bytes and images; the ingest
//! stage owns the I/O.
//!
//! **Coordinates.** Landmark strings are `"(x, y, z)"` in pixels with `y` measured from the image
//! bottom; they are stored here in image coordinates (`y_img = H − y`), continuous convention
//! (pixel `i` covers `[i, i+1)`, the convention `image`'s resize uses), `z` dropped.
//!
//! **Gaze.** `eye_details.look_vec` is `"(x, y, z, 0.0000)"` in Unity's left-handed camera frame
//! (x right, y up, z forward from the camera), so an eye looking into the camera has `z < 0`
//! (a real file: `"(-0.0015, 0.4025, -0.9154, 0.0000)"`, iris above the lid centre). The project
//! frame (see [`crate::domains::eyes`]) is OpenCV's (y down), so the conversion is `(x, −y, z)`,
//! normalised. This is exactly GazeML's tested UnityEyes→(pitch, yaw) conversion: it negates `x`,
//! takes `pitch = asin(v_y)`, `yaw = atan2(v_x, v_z)` and then reflects yaw (`π − yaw`), which
//! amounts to `pitch = asin(y)`, `yaw = atan2(−x, −z)` — the project's `pitch = asin(−y′)`,
//! `yaw = atan2(−x′, −z′)` for `(x′, y′, z′) = (x, −y, z)`. (`(x, −y, −z)` would put frontal
//! gazes at yaw ≈ 180°.)
//!
//! **Head pose.** `head_pose` is `"(pitch, yaw, roll)"` in degrees in `[0, 360)`. A frontal head has
//! yaw ≈ 180 in UnityEyes, so, as GazeML does ("h_yaw -= 180"), yaw is taken relative to 180;
//! all three angles are then wrapped to `(−180, 180]`. The signs are UnityEyes' own.
//!
//! **Crops.** [`CropMode::Fixed`] (carpedm20's SimGAN: 140×84 around the centre of the bounding
//! box of `interior_margin_2d`) or [`CropMode::WidthRelative`] (GazeML: width = scale ·
//! |mean(caruncle).x − interior[8].x|, height = width·35/55, same centre). A crop box reaching
//! outside the image is **rejected** ([`UnityEyesError::CropOutOfBounds`]) rather than padded: a
//! constant band is an artefact the refiner and discriminator would learn; the ingest stage's
//! `on_error` policy decides whether to skip such samples.

use image::{DynamicImage, GrayImage};
use serde_json::Value;

use super::{EYE_H, EYE_W, EyeSample};

/// Number of points in `interior_margin_2d`.
pub const N_INTERIOR: usize = 16;
/// Number of points in `caruncle_2d`.
pub const N_CARUNCLE: usize = 7;
/// Number of points in `iris_2d`.
pub const N_IRIS: usize = 32;
/// UnityEyes' head yaw of a frontal head, in degrees.
pub const FRONTAL_HEAD_YAW_DEG: f64 = 180.0;

/// The label of one UnityEyes render, in image coordinates and the project gaze convention.
#[derive(Debug, Clone, PartialEq)]
pub struct UnityEyesLabel {
    /// 16 eyelid-margin points `[x, y]` (image coordinates); index 8 is the outer corner.
    pub interior_margin: Vec<[f32; 2]>,
    /// 7 caruncle points (the inner corner).
    pub caruncle: Vec<[f32; 2]>,
    /// 32 iris-contour points.
    pub iris: Vec<[f32; 2]>,
    /// Unit gaze vector, project convention.
    pub gaze: [f32; 3],
    /// (pitch, yaw relative to frontal, roll) in degrees, each in `(−180, 180]`.
    pub head_pose: [f32; 3],
    pub pupil_size: Option<f32>,
    pub iris_size: Option<f32>,
}

#[derive(Debug, thiserror::Error)]
pub enum UnityEyesError {
    #[error("UnityEyes JSON is malformed: {0}")]
    Json(serde_json::Error),
    #[error("UnityEyes JSON: missing key `{key}`")]
    MissingKey { key: String },
    #[error("UnityEyes JSON: `{key}` should be {expected}")]
    WrongType { key: String, expected: &'static str },
    #[error("UnityEyes JSON: `{key}` has {found} points, expected {expected}")]
    PointCount {
        key: String,
        expected: usize,
        found: usize,
    },
    #[error("UnityEyes JSON: `{key}` = {text:?}: {problem}")]
    BadValue {
        key: String,
        text: String,
        problem: String,
    },
    #[error("UnityEyes JSON: `eye_details.look_vec` {look_vec:?} has zero length")]
    ZeroGaze { look_vec: [f64; 3] },
    #[error("crop box {w}×{h} at ({x0}, {y0}) does not fit the {img_w}×{img_h} image")]
    CropOutOfBounds {
        x0: i64,
        y0: i64,
        w: u32,
        h: u32,
        img_w: u32,
        img_h: u32,
    },
    #[error("crop box from `caruncle_2d`/`interior_margin_2d` is degenerate ({w}×{h} px)")]
    DegenerateCrop { w: f32, h: f32 },
    #[error("image: {0}")]
    Image(String),
}

/// How the eye region is cut out before resizing to 55×35.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CropMode {
    /// A fixed `w`×`h` pixel box (carpedm20: 140×84).
    Fixed { w: u32, h: u32 },
    /// Width `scale`·|mean(caruncle).x − interior[8].x| (GazeML: 1.5), height width·35/55.
    WidthRelative { scale: f32 },
}

impl CropMode {
    /// carpedm20's SimGAN crop.
    pub const CARPEDM20: CropMode = CropMode::Fixed { w: 140, h: 84 };
    /// GazeML's eye-width-relative crop.
    pub const GAZEML: CropMode = CropMode::WidthRelative { scale: 1.5 };
}

/// An integer crop box in image pixels (may reach outside the image; [`crop_eye`] rejects that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub x0: i64,
    pub y0: i64,
    pub w: u32,
    pub h: u32,
}

fn get<'a>(v: &'a Value, path: &[&str]) -> Result<&'a Value, UnityEyesError> {
    let mut cur = v;
    for (k, key) in path.iter().enumerate() {
        cur = cur.get(key).ok_or_else(|| UnityEyesError::MissingKey {
            key: path[..=k].join("."),
        })?;
    }
    Ok(cur)
}

fn as_str<'a>(v: &'a Value, key: &str) -> Result<&'a str, UnityEyesError> {
    v.as_str().ok_or_else(|| UnityEyesError::WrongType {
        key: key.to_string(),
        expected: "a string",
    })
}

/// Parse `"(a, b, …)"` into `min..=max` finite numbers.
fn tuple(text: &str, key: &str, min: usize, max: usize) -> Result<Vec<f64>, UnityEyesError> {
    let bad = |problem: String| UnityEyesError::BadValue {
        key: key.to_string(),
        text: text.to_string(),
        problem,
    };
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| bad("expected \"(a, b, …)\"".into()))?;
    let mut out = Vec::new();
    for (k, part) in inner.split(',').enumerate() {
        let x: f64 = part
            .trim()
            .parse()
            .map_err(|_| bad(format!("component {k} is not a number")))?;
        if !x.is_finite() {
            return Err(bad(format!("component {k} is not finite")));
        }
        out.push(x);
    }
    if out.len() < min || out.len() > max {
        let want = if min == max {
            min.to_string()
        } else {
            format!("{min}–{max}")
        };
        return Err(bad(format!(
            "expected {want} components, found {}",
            out.len()
        )));
    }
    Ok(out)
}

fn points(root: &Value, key: &str, n: usize, height: f64) -> Result<Vec<[f32; 2]>, UnityEyesError> {
    let arr = get(root, &[key])?
        .as_array()
        .ok_or_else(|| UnityEyesError::WrongType {
            key: key.to_string(),
            expected: "an array of \"(x, y, z)\" strings",
        })?;
    if arr.len() != n {
        return Err(UnityEyesError::PointCount {
            key: key.to_string(),
            expected: n,
            found: arr.len(),
        });
    }
    arr.iter()
        .enumerate()
        .map(|(k, p)| {
            let item = format!("{key}[{k}]");
            let t = tuple(as_str(p, &item)?, &item, 3, 3)?;
            Ok([t[0] as f32, (height - t[1]) as f32])
        })
        .collect()
}

/// An optional number stored as a string (as UnityEyes writes it) or as a JSON number.
fn opt_number(root: &Value, path: &[&str]) -> Result<Option<f32>, UnityEyesError> {
    let key = path.join(".");
    let Ok(v) = get(root, path) else {
        return Ok(None);
    };
    let x = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => {
            return Err(UnityEyesError::WrongType {
                key,
                expected: "a number or a numeric string",
            });
        }
    };
    match x {
        Some(x) if x.is_finite() => Ok(Some(x as f32)),
        _ => Err(UnityEyesError::BadValue {
            key,
            text: v.to_string(),
            problem: "not a finite number".into(),
        }),
    }
}

/// Wrap degrees to `(−180, 180]`.
fn wrap180(a: f64) -> f64 {
    let w = a.rem_euclid(360.0);
    if w > 180.0 { w - 360.0 } else { w }
}

/// Parse a UnityEyes `N.json` for an image `image_height` pixels tall (480 for the standard 640×480
/// renders). See the module docs for the conversions.
pub fn parse_json(bytes: &[u8], image_height: u32) -> Result<UnityEyesLabel, UnityEyesError> {
    let root: Value = serde_json::from_slice(bytes).map_err(UnityEyesError::Json)?;
    if !root.is_object() {
        return Err(UnityEyesError::WrongType {
            key: "(top level)".into(),
            expected: "an object",
        });
    }
    let h = f64::from(image_height);
    let interior_margin = points(&root, "interior_margin_2d", N_INTERIOR, h)?;
    let caruncle = points(&root, "caruncle_2d", N_CARUNCLE, h)?;
    let iris = points(&root, "iris_2d", N_IRIS, h)?;

    let key = "eye_details.look_vec";
    let l = tuple(
        as_str(get(&root, &["eye_details", "look_vec"])?, key)?,
        key,
        3,
        4,
    )?;
    let v = [l[0], -l[1], l[2]];
    let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    if n == 0.0 {
        return Err(UnityEyesError::ZeroGaze {
            look_vec: [l[0], l[1], l[2]],
        });
    }
    let gaze = [(v[0] / n) as f32, (v[1] / n) as f32, (v[2] / n) as f32];

    let hp = tuple(
        as_str(get(&root, &["head_pose"])?, "head_pose")?,
        "head_pose",
        3,
        3,
    )?;
    let head_pose = [
        wrap180(hp[0]) as f32,
        wrap180(hp[1] - FRONTAL_HEAD_YAW_DEG) as f32,
        wrap180(hp[2]) as f32,
    ];

    Ok(UnityEyesLabel {
        interior_margin,
        caruncle,
        iris,
        gaze,
        head_pose,
        pupil_size: opt_number(&root, &["eye_details", "pupil_size"])?,
        iris_size: opt_number(&root, &["eye_details", "iris_size"])?,
    })
}

/// Centre of the bounding box of the interior margin.
fn margin_centre(label: &UnityEyesLabel) -> [f32; 2] {
    let (mut lo, mut hi) = ([f32::INFINITY; 2], [f32::NEG_INFINITY; 2]);
    for p in &label.interior_margin {
        for a in 0..2 {
            lo[a] = lo[a].min(p[a]);
            hi[a] = hi[a].max(p[a]);
        }
    }
    [(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0]
}

/// The crop box `mode` selects for `label` (see the module docs).
pub fn crop_box(label: &UnityEyesLabel, mode: CropMode) -> Result<CropBox, UnityEyesError> {
    let (w, h) = match mode {
        CropMode::Fixed { w, h } => (w as f32, h as f32),
        CropMode::WidthRelative { scale } => {
            let n = label.caruncle.len().max(1) as f32;
            let caruncle_x = label.caruncle.iter().map(|p| p[0]).sum::<f32>() / n;
            let outer_x = label.interior_margin.get(8).map_or(f32::NAN, |p| p[0]);
            let w = (scale * (caruncle_x - outer_x).abs()).round();
            (w, (w * EYE_H as f32 / EYE_W as f32).round())
        }
    };
    let c = margin_centre(label);
    let x0 = (c[0] - w / 2.0).round();
    let y0 = (c[1] - h / 2.0).round();
    if !(w >= 1.0 && h >= 1.0 && w < 1e6 && h < 1e6 && x0.is_finite() && y0.is_finite()) {
        return Err(UnityEyesError::DegenerateCrop { w, h });
    }
    Ok(CropBox {
        x0: x0 as i64,
        y0: y0 as i64,
        w: w as u32,
        h: h as u32,
    })
}

/// [`crop_box`] checked against a `img_w`×`img_h` render.
fn fitted_box(
    label: &UnityEyesLabel,
    mode: CropMode,
    (img_w, img_h): (u32, u32),
) -> Result<CropBox, UnityEyesError> {
    let b = crop_box(label, mode)?;
    let fits = b.x0 >= 0
        && b.y0 >= 0
        && b.x0 + i64::from(b.w) <= i64::from(img_w)
        && b.y0 + i64::from(b.h) <= i64::from(img_h);
    if !fits {
        return Err(UnityEyesError::CropOutOfBounds {
            x0: b.x0,
            y0: b.y0,
            w: b.w,
            h: b.h,
            img_w,
            img_h,
        });
    }
    Ok(b)
}

/// The grey crop resized (triangle filter) to 55×35, with the landmarks in its pixel coordinates.
fn finish_crop(gray: &GrayImage, b: CropBox, label: &UnityEyesLabel) -> (GrayImage, Vec<f32>) {
    let eye = crate::resample::resize_triangle(gray, EYE_W, EYE_H);
    let (sx, sy) = (EYE_W as f32 / b.w as f32, EYE_H as f32 / b.h as f32);
    let landmarks = label
        .interior_margin
        .iter()
        .chain(&label.caruncle)
        .chain(&label.iris)
        .flat_map(|p| [(p[0] - b.x0 as f32) * sx, (p[1] - b.y0 as f32) * sy])
        .collect();
    (eye, landmarks)
}

/// Cut the eye out of a render: crop ([`crop_box`]), grayscale, resize (triangle filter) to 55×35.
/// Returns the image and all landmarks (interior margin, caruncle, iris: 55 points flattened
/// `x0, y0, x1, y1, …`) transformed into the crop's pixel coordinates.
pub fn crop_eye(
    img: &DynamicImage,
    label: &UnityEyesLabel,
    mode: CropMode,
) -> Result<(GrayImage, Vec<f32>), UnityEyesError> {
    let b = fitted_box(label, mode, (img.width(), img.height()))?;
    let gray = img.crop_imm(b.x0 as u32, b.y0 as u32, b.w, b.h).to_luma8();
    Ok(finish_crop(&gray, b, label))
}

/// [`crop_eye`] straight from a render's JPEG bytes, decoding only the crop box's luma
/// ([`crate::jpeg::gray_region`]: ≈ 4× faster than decoding the render). A JPEG without a luma
/// plane (CMYK) is decoded whole instead.
pub fn crop_eye_jpeg(
    bytes: &[u8],
    label: &UnityEyesLabel,
    mode: CropMode,
) -> Result<(GrayImage, Vec<f32>), UnityEyesError> {
    let size = crate::jpeg::size(bytes).map_err(|e| UnityEyesError::Image(e.to_string()))?;
    let b = fitted_box(label, mode, (size.width, size.height))?;
    let region = (b.x0 as u32, b.y0 as u32, b.w, b.h);
    let gray = match crate::jpeg::gray_region(bytes, region, crate::sample::MAX_IMAGE_SIDE) {
        Ok(g) => g,
        Err(crate::jpeg::JpegError::ColourSpace(_)) => {
            let img = decode_gray(bytes).map_err(UnityEyesError::Image)?;
            return crop_eye(&img, label, mode);
        }
        Err(e) => return Err(UnityEyesError::Image(e.to_string())),
    };
    Ok(finish_crop(&gray, b, label))
}

/// Decode an image file to grey (bounded by [`crate::sample::MAX_IMAGE_SIDE`]). Errors are the
/// decoder's message.
pub fn decode_gray(bytes: &[u8]) -> Result<DynamicImage, String> {
    crate::sample::decode_bounded(bytes)
        .map(|i| DynamicImage::ImageLuma8(i.to_luma8()))
        .map_err(|e| e.to_string())
}

/// An [`EyeSample`] from a render and its label (landmarks as in [`crop_eye`]).
pub fn to_sample(
    img: &DynamicImage,
    label: &UnityEyesLabel,
    mode: CropMode,
) -> Result<EyeSample, UnityEyesError> {
    Ok(eye_sample(label, crop_eye(img, label, mode)?))
}

/// [`to_sample`] from a render's JPEG bytes ([`crop_eye_jpeg`]: only the crop is decoded).
pub fn to_sample_jpeg(
    bytes: &[u8],
    label: &UnityEyesLabel,
    mode: CropMode,
) -> Result<EyeSample, UnityEyesError> {
    Ok(eye_sample(label, crop_eye_jpeg(bytes, label, mode)?))
}

fn eye_sample(label: &UnityEyesLabel, (image, landmarks): (GrayImage, Vec<f32>)) -> EyeSample {
    EyeSample {
        image,
        gaze: label.gaze,
        head_pose: label.head_pose,
        landmarks: Some(landmarks),
    }
}

/// **Test-fixture helper**: a plausible label for an eye centred at `centre` (image coordinates),
/// `eye_width` pixels corner to corner, looking along `gaze` (project convention, normalised here)
/// with `head_pose` degrees (already relative to frontal). Interior margin point 0 is the inner
/// corner (next to the caruncle, image left), point 8 the outer corner; the iris is shifted with
/// the gaze.
pub fn fixture_label(
    centre: [f32; 2],
    eye_width: f32,
    gaze: [f32; 3],
    head_pose: [f32; 3],
) -> UnityEyesLabel {
    let a = eye_width / 2.0;
    let b = 0.45 * a;
    let ring = |n: usize, c: [f32; 2], rx: f32, ry: f32| -> Vec<[f32; 2]> {
        (0..n)
            .map(|k| {
                let t = std::f32::consts::TAU * k as f32 / n as f32;
                [c[0] - rx * t.cos(), c[1] - ry * t.sin()]
            })
            .collect()
    };
    let n = (gaze[0] * gaze[0] + gaze[1] * gaze[1] + gaze[2] * gaze[2])
        .sqrt()
        .max(f32::MIN_POSITIVE);
    let g = [gaze[0] / n, gaze[1] / n, gaze[2] / n];
    let iris_c = [centre[0] + 0.6 * a * g[0], centre[1] + 0.6 * a * g[1]];
    UnityEyesLabel {
        interior_margin: ring(N_INTERIOR, centre, a, b),
        caruncle: ring(
            N_CARUNCLE,
            [centre[0] - 1.1 * a, centre[1] + 0.05 * a],
            0.06 * a,
            0.06 * a,
        ),
        iris: ring(N_IRIS, iris_c, 0.35 * a, 0.35 * a),
        gaze: g,
        head_pose,
        pupil_size: Some(0.05),
        iris_size: Some(0.93),
    }
}

/// **Test-fixture helper**: the `N.json` UnityEyes would write for `label` on an image
/// `image_height` pixels tall — the real key layout (`interior_margin_2d`, `caruncle_2d`,
/// `iris_2d`, `lighting_details`, `eye_region_details`, `eye_details`, `head_pose`) with values as
/// strings like real files. [`parse_json`] gives `label` back exactly, except that the gaze is
/// re-normalised (within 1e-6). Numbers are printed with full precision, not UnityEyes' 4 decimals.
pub fn fixture_json(label: &UnityEyesLabel, image_height: u32) -> String {
    let h = f64::from(image_height);
    let pts = |ps: &[[f32; 2]]| -> Vec<String> {
        ps.iter()
            .map(|p| format!("({}, {}, 9.8674)", f64::from(p[0]), h - f64::from(p[1])))
            .collect()
    };
    let g = label.gaze.map(f64::from);
    let hp = label.head_pose.map(f64::from);
    let unwrap360 = |a: f64| if a < 0.0 { a + 360.0 } else { a };
    let mut eye_details = serde_json::json!({
        "look_vec": format!("({}, {}, {}, 0.0000)", g[0], -g[1], g[2]),
        "iris_texture": "eyeball_brown",
    });
    for (key, v) in [
        ("pupil_size", label.pupil_size),
        ("iris_size", label.iris_size),
    ] {
        if let (Some(v), Some(obj)) = (v, eye_details.as_object_mut()) {
            obj.insert(key.into(), Value::String(f64::from(v).to_string()));
        }
    }
    let json = serde_json::json!({
        "interior_margin_2d": pts(&label.interior_margin),
        "caruncle_2d": pts(&label.caruncle),
        "iris_2d": pts(&label.iris),
        "lighting_details": {
            "skybox_texture": "Textures/Skyboxes/cubemap_01",
            "skybox_exposure": "1.112307",
            "skybox_rotation": "70",
            "ambient_intensity": "0.8478116",
            "light_rotation": "(38.8, 200.2, 0.0)",
            "light_intensity": "1.124296",
        },
        "eye_region_details": {
            "pca_shape_coeffs": vec!["0.0000"; 19],
            "primary_skin_texture": "f02_lightskin",
        },
        "eye_details": eye_details,
        "head_pose": format!(
            "({}, {}, {})",
            unwrap360(hp[0]),
            hp[1] + FRONTAL_HEAD_YAW_DEG,
            unwrap360(hp[2])
        ),
    });
    serde_json::to_string_pretty(&json).unwrap_or_default()
}

/// **Test-fixture helper**: a `width`×`height` RGB render stand-in — mid-gray, with a bright disc
/// (radius `eye_width/12`, at least 2 px) at the centre of the interior-margin bounding box, so
/// crop tests can find the eye centre.
pub fn fixture_image(label: &UnityEyesLabel, width: u32, height: u32) -> image::RgbImage {
    let c = margin_centre(label);
    let eye_w = label
        .interior_margin
        .iter()
        .map(|p| p[0])
        .fold(f32::NEG_INFINITY, f32::max)
        - label
            .interior_margin
            .iter()
            .map(|p| p[0])
            .fold(f32::INFINITY, f32::min);
    let r = (eye_w / 12.0).max(2.0);
    image::RgbImage::from_fn(width, height, |x, y| {
        let (dx, dy) = (x as f32 + 0.5 - c[0], y as f32 + 0.5 - c[1]);
        if dx * dx + dy * dy <= r * r {
            image::Rgb([255, 255, 255])
        } else {
            image::Rgb([96, 96, 96])
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domains::eyes::pitch_yaw;

    fn label() -> UnityEyesLabel {
        fixture_label(
            [301.3, 203.7],
            64.0,
            [0.2, -0.1, -0.97],
            [-8.75, 12.5, 3.25],
        )
    }

    fn with(json: impl AsRef<[u8]>, f: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut v: Value = serde_json::from_slice(json.as_ref()).unwrap();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn fixture_round_trips() {
        let l = label();
        let json = fixture_json(&l, 480);
        let back = parse_json(json.as_bytes(), 480).unwrap();
        let g = back.gaze;
        assert!(
            (0..3).all(|k| (g[k] - l.gaze[k]).abs() < 1e-6),
            "{g:?} vs {:?}",
            l.gaze
        );
        assert_eq!(
            UnityEyesLabel {
                gaze: l.gaze,
                ..back
            },
            l
        );
        let v: Value = serde_json::from_str(&json).unwrap();
        for key in [
            "lighting_details",
            "eye_region_details",
            "eye_details",
            "head_pose",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
        // Optional sizes may be absent.
        let bare = with(&json, |v| {
            v["eye_details"]
                .as_object_mut()
                .unwrap()
                .remove("pupil_size");
        });
        assert_eq!(parse_json(&bare, 480).unwrap().pupil_size, None);
    }

    /// Values from a real UnityEyes file: y flip, gaze and head-pose conversions.
    #[test]
    fn real_values_convert_to_project_conventions() {
        let json = with(fixture_json(&label(), 480), |v| {
            v["interior_margin_2d"][0] = "(251.5525, 233.6851, 9.6326)".into();
            v["eye_details"]["look_vec"] = "(-0.0015, 0.4025, -0.9154, 0.0000)".into();
            v["eye_details"]["pupil_size"] = "0.0123414".into();
            v["head_pose"] = "(351.1316, 176.1580, 0.0000)".into();
        });
        let l = parse_json(&json, 480).unwrap();
        assert_eq!(
            l.interior_margin[0],
            [251.5525, (480.0f64 - 233.6851) as f32]
        );
        assert_eq!(l.pupil_size, Some(0.0123414));
        let (pitch, yaw) = pitch_yaw(l.gaze);
        // The iris sits above the lid centre in that render: looking up, straight ahead.
        assert!(
            (pitch.to_degrees() - 23.73).abs() < 0.02,
            "pitch {}",
            pitch.to_degrees()
        );
        assert!(yaw.to_degrees().abs() < 0.2, "yaw {}", yaw.to_degrees());
        let hp = l.head_pose;
        assert!(
            (hp[0] + 8.8684).abs() < 1e-3 && (hp[1] + 3.842).abs() < 1e-3 && hp[2] == 0.0,
            "{hp:?}"
        );
        // Looking toward the image right (+x) is negative yaw.
        let right = with(&json, |v| {
            v["eye_details"]["look_vec"] = "(0.5, 0.0, -0.8660254, 0.0000)".into()
        });
        let (_, yaw) = pitch_yaw(parse_json(&right, 480).unwrap().gaze);
        assert!((yaw.to_degrees() + 30.0).abs() < 1e-3);
    }

    #[test]
    fn bad_inputs_name_the_key() {
        use UnityEyesError as E;
        let good = fixture_json(&label(), 480);
        let err = |b: &[u8]| parse_json(b, 480).unwrap_err();
        assert!(matches!(err(b"{\"interior_margin_2d\": ["), E::Json(_)));
        assert!(matches!(err(b"[1]"), E::WrongType { .. }));
        let e = err(&with(&good, |v| {
            v.as_object_mut().unwrap().remove("iris_2d");
        }));
        assert!(
            matches!(&e, E::MissingKey { key } if key == "iris_2d"),
            "{e}"
        );
        let e = err(&with(&good, |v| {
            v["eye_details"].as_object_mut().unwrap().remove("look_vec");
        }));
        assert!(
            matches!(&e, E::MissingKey { key } if key == "eye_details.look_vec"),
            "{e}"
        );
        let e = err(&with(&good, |v| {
            v["caruncle_2d"].as_array_mut().unwrap().pop();
        }));
        assert!(
            matches!(&e, E::PointCount { key, expected: 7, found: 6 } if key == "caruncle_2d"),
            "{e}"
        );
        let e = err(&with(&good, |v| v["iris_2d"][3] = "(1.0, abc, 2.0)".into()));
        assert!(
            matches!(&e, E::BadValue { key, .. } if key == "iris_2d[3]"),
            "{e}"
        );
        let e = err(&with(&good, |v| v["iris_2d"][4] = "(1.0, 2.0)".into()));
        assert!(
            matches!(&e, E::BadValue { key, .. } if key == "iris_2d[4]"),
            "{e}"
        );
        let e = err(&with(&good, |v| v["iris_2d"][5] = 3.0.into()));
        assert!(
            matches!(&e, E::WrongType { key, .. } if key == "iris_2d[5]"),
            "{e}"
        );
        let e = err(&with(&good, |v| v["interior_margin_2d"] = "nope".into()));
        assert!(
            matches!(&e, E::WrongType { key, .. } if key == "interior_margin_2d"),
            "{e}"
        );
        let e = err(&with(&good, |v| {
            v["eye_details"]["look_vec"] = "(0, 0, 0, 0.0000)".into()
        }));
        assert!(matches!(e, E::ZeroGaze { .. }), "{e}");
        let e = err(&with(&good, |v| {
            v["eye_details"]["look_vec"] = "(NaN, 0, -1, 0.0000)".into()
        }));
        assert!(
            matches!(&e, E::BadValue { key, .. } if key == "eye_details.look_vec"),
            "{e}"
        );
        let e = err(&with(&good, |v| {
            v["eye_details"]["look_vec"] = "0.1, 0.2, 0.3".into()
        }));
        assert!(
            matches!(&e, E::BadValue { key, .. } if key == "eye_details.look_vec"),
            "{e}"
        );
        let e = err(&with(&good, |v| v["head_pose"] = "(1, 2)".into()));
        assert!(
            matches!(&e, E::BadValue { key, .. } if key == "head_pose"),
            "{e}"
        );
        let e = err(&with(&good, |v| {
            v["eye_details"]["pupil_size"] = "big".into()
        }));
        assert!(
            matches!(&e, E::BadValue { key, .. } if key == "eye_details.pupil_size"),
            "{e}"
        );
        let e = err(&with(&good, |v| {
            v["eye_details"]["iris_size"] = Value::Bool(true)
        }));
        assert!(
            matches!(&e, E::WrongType { key, .. } if key == "eye_details.iris_size"),
            "{e}"
        );
    }

    /// Intensity-weighted centroid of the pixels brighter than `thr`, in continuous coordinates.
    fn centroid(img: &GrayImage, thr: u8) -> [f32; 2] {
        let (mut s, mut sx, mut sy) = (0f32, 0f32, 0f32);
        for (x, y, p) in img.enumerate_pixels() {
            let w = f32::from(p[0].saturating_sub(thr));
            s += w;
            sx += w * (x as f32 + 0.5);
            sy += w * (y as f32 + 0.5);
        }
        [sx / s, sy / s]
    }

    #[test]
    fn crop_centres_the_eye_and_transforms_landmarks() {
        let l = label();
        let img = DynamicImage::ImageRgb8(fixture_image(&l, 640, 480));
        for mode in [CropMode::CARPEDM20, CropMode::GAZEML] {
            let (eye, lm) = crop_eye(&img, &l, mode).unwrap();
            assert_eq!(eye.dimensions(), (EYE_W, EYE_H));
            assert_eq!(lm.len(), 2 * (N_INTERIOR + N_CARUNCLE + N_IRIS));
            let c = centroid(&eye, 120);
            assert!(
                (c[0] - 27.5).abs() < 0.6 && (c[1] - 17.5).abs() < 0.6,
                "{mode:?}: blob at {c:?}"
            );
            // The transformed corners bracket the crop centre symmetrically.
            let (inner, outer) = ((lm[0], lm[1]), (lm[16], lm[17]));
            assert!(((inner.0 + outer.0) / 2.0 - 27.5).abs() < 0.6 && (inner.1 - 17.5).abs() < 0.6);
        }
        let b = crop_box(&l, CropMode::GAZEML).unwrap();
        let caruncle_x = l.caruncle.iter().map(|p| p[0]).sum::<f32>() / 7.0;
        assert_eq!(
            b.w,
            (1.5 * (caruncle_x - l.interior_margin[8][0]).abs()).round() as u32
        );
        assert_eq!(b.h, (b.w as f32 * 35.0 / 55.0).round() as u32);
        assert_eq!(
            crop_box(&l, CropMode::CARPEDM20).unwrap(),
            CropBox {
                x0: 231,
                y0: 162,
                w: 140,
                h: 84
            }
        );
    }

    /// A bright dot placed on one landmark shows up where the transformed landmark says.
    #[test]
    fn landmarks_follow_the_pixels() {
        let l = label();
        for (k, mode) in [
            (8usize, CropMode::CARPEDM20),
            (3, CropMode::GAZEML),
            (16 + 7 + 5, CropMode::CARPEDM20),
        ] {
            let p = l
                .interior_margin
                .iter()
                .chain(&l.caruncle)
                .chain(&l.iris)
                .nth(k)
                .copied()
                .unwrap();
            let img = DynamicImage::ImageLuma8(GrayImage::from_fn(640, 480, |x, y| {
                let (dx, dy) = (x as f32 + 0.5 - p[0], y as f32 + 0.5 - p[1]);
                image::Luma([if dx * dx + dy * dy <= 9.0 { 255 } else { 0 }])
            }));
            let (eye, lm) = crop_eye(&img, &l, mode).unwrap();
            let c = centroid(&eye, 0);
            assert!(
                (c[0] - lm[2 * k]).abs() < 0.5 && (c[1] - lm[2 * k + 1]).abs() < 0.5,
                "{k}: {c:?} vs {:?}",
                &lm[2 * k..2 * k + 2]
            );
        }
    }

    /// The crop from a JPEG's bytes (only the crop box decoded) is the crop of the whole render
    /// decoded by the same library: same pixels, same landmarks; a box reaching outside the
    /// render is refused before any decoding, and a corrupt file is an error, not grey pixels.
    #[test]
    fn the_jpeg_crop_is_the_crop_of_the_whole_render() {
        use image::ImageEncoder;
        let l = label();
        let rgb = image::RgbImage::from_fn(640, 480, |x, y| {
            let v = ((x * 7 + y * 13) % 251) as u8 ^ ((x * y) % 23) as u8;
            image::Rgb([v, v / 2 + 60, 255 - v])
        });
        let mut jpg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 75)
            .write_image(rgb.as_raw(), 640, 480, image::ExtendedColorType::Rgb8)
            .unwrap();
        let whole = DynamicImage::ImageLuma8(
            crate::jpeg::gray_region(&jpg, (0, 0, 640, 480), 16384).unwrap(),
        );
        for mode in [CropMode::CARPEDM20, CropMode::GAZEML] {
            assert_eq!(
                crop_eye_jpeg(&jpg, &l, mode).unwrap(),
                crop_eye(&whole, &l, mode).unwrap()
            );
        }
        let near_edge = fixture_label([30.0, 240.0], 64.0, [0.0, 0.0, -1.0], [0.0; 3]);
        assert!(matches!(
            crop_eye_jpeg(&jpg, &near_edge, CropMode::CARPEDM20),
            Err(UnityEyesError::CropOutOfBounds { x0: -40, .. })
        ));
        let mut corrupt = jpg.clone();
        let n = corrupt.len();
        corrupt[n / 3..n / 3 + 400].fill(0xFF);
        let e = crop_eye_jpeg(&corrupt, &l, CropMode::CARPEDM20).unwrap_err();
        assert!(matches!(e, UnityEyesError::Image(_)), "{e}");
    }

    #[test]
    fn bad_crops_are_rejected() {
        let near_edge = fixture_label([30.0, 240.0], 64.0, [0.0, 0.0, -1.0], [0.0; 3]);
        let img = DynamicImage::ImageRgb8(fixture_image(&near_edge, 640, 480));
        assert!(matches!(
            crop_eye(&img, &near_edge, CropMode::CARPEDM20),
            Err(UnityEyesError::CropOutOfBounds { x0: -40, .. })
        ));
        let mut flat = label();
        let x = flat.interior_margin[8][0];
        flat.caruncle.iter_mut().for_each(|p| p[0] = x);
        assert!(matches!(
            crop_box(&flat, CropMode::GAZEML),
            Err(UnityEyesError::DegenerateCrop { .. })
        ));
        let s = to_sample(&img, &label(), CropMode::GAZEML).unwrap();
        assert_eq!(
            (
                s.image.width(),
                s.image.height(),
                s.landmarks.map(|l| l.len())
            ),
            (55, 35, Some(110))
        );
    }
}
