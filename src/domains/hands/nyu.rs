//! The NYU hand pose dataset (Tompson et al. 2014) read into hand crops: the depth PNG format,
//! `joint_data.mat`, and the metric crop around the palm.
//!
//! - Depth frames: `depth_K_NNNNNNN.png` (real, Kinect K = 1…3; 1 is the frontal view the
//!   evaluation uses) and `synthdepth_K_NNNNNNN.png` (NYU's rendered synthetic twin), 640×480
//!   RGB with depth in mm = `(G << 8) | B` (R unused); 0 and ≥ 32001 are invalid.
//! - `joint_data.mat` (MATLAB v5): `joint_uvd` and `joint_xyz`, doubles of MATLAB size
//!   `[kinect][frame][36][3]` (uvd: pixel u, v and depth mm; xyz: mm, y up), and `joint_names`.
//!   The 14 evaluated joints are [`EVAL_JOINTS`]; the crop is centred on raw joint 32 (palm).
//!   u, v are taken as 0-based pixel coordinates with pixel centres at integers.
//! - Crop (DeepPrior++'s): a cube of `cube_mm` around the palm projected at the palm's depth to a
//!   pixel box (`cube·f / z` px per side), sampled nearest-neighbour to `size × size`; depths
//!   behind the cube are background (0), in front of it clamped to its front face; invalid
//!   depths and pixels outside the frame are background. Labels are mapped into the crop
//!   exactly as the procedural hand's ([`super::render`]): same [`Frame`], same conventions.

use crate::mat::{self, MatValue};

use super::render::{FX, FY, Frame, JOINTS, PALM};

/// NYU's 14 evaluated joints among its 36 (0-based), in the evaluation order.
pub const EVAL_JOINTS: [usize; JOINTS] = [0, 3, 6, 9, 12, 15, 18, 21, 24, 25, 27, 30, 31, 32];

/// Joints per frame in `joint_data.mat`.
pub const RAW_JOINTS: usize = 36;

/// Depth values at or above this are invalid (NYU writes 32001).
pub const INVALID_DEPTH: u16 = 32001;

/// `joint_uvd` and `joint_xyz` of one `joint_data.mat`.
#[derive(Debug, Clone, PartialEq)]
pub struct NyuJoints {
    /// Kinects in the file (3 in NYU).
    pub kinects: usize,
    /// Frames per kinect.
    pub frames: usize,
    uvd: Vec<f64>,
    xyz: Vec<f64>,
}

impl NyuJoints {
    /// Column-major index of `(kinect, frame, joint, coord)` in a `[K][N][36][3]` array.
    fn at(&self, kinect: usize, frame: usize, joint: usize, c: usize) -> usize {
        kinect + self.kinects * (frame + self.frames * (joint + RAW_JOINTS * c))
    }

    /// The 14 evaluated joints of 0-based `frame` seen by 0-based `kinect`: `(uvd, xyz)`, each
    /// row-major 14×3.
    pub fn eval_joints(
        &self,
        kinect: usize,
        frame: usize,
    ) -> ([f32; 3 * JOINTS], [f32; 3 * JOINTS]) {
        let mut uvd = [0f32; 3 * JOINTS];
        let mut xyz = [0f32; 3 * JOINTS];
        for (k, &j) in EVAL_JOINTS.iter().enumerate() {
            for c in 0..3 {
                let i = self.at(kinect, frame, j, c);
                uvd[3 * k + c] = self.uvd[i] as f32;
                xyz[3 * k + c] = self.xyz[i] as f32;
            }
        }
        (uvd, xyz)
    }
}

/// Read `joint_uvd` and `joint_xyz` from a `joint_data.mat`'s bytes.
pub fn parse_joints(bytes: &[u8]) -> Result<NyuJoints, String> {
    let vars = mat::read_mat(bytes).map_err(|e| e.to_string())?;
    let get = |name: &str| -> Result<(Vec<usize>, Vec<f64>), String> {
        match mat::find_var(&vars, name) {
            Some(MatValue::Numeric { dims, data }) => Ok((dims.clone(), data.to_f64())),
            Some(other) => Err(format!(
                "`{name}` is {}, not a numeric array",
                other.describe()
            )),
            None => Err(format!(
                "no variable `{name}` (found: {})",
                vars.iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    };
    let (ud, uvd) = get("joint_uvd")?;
    let (xd, xyz) = get("joint_xyz")?;
    let shape = |dims: &[usize], name: &str| -> Result<(usize, usize), String> {
        match dims {
            [k, n, j, 3] if *j == RAW_JOINTS && *k > 0 => Ok((*k, *n)),
            // A single kinect saved as [N][36][3].
            [n, j, 3] if *j == RAW_JOINTS => Ok((1, *n)),
            _ => Err(format!(
                "`{name}` has size {}, expected [kinect][frame][36][3]",
                dims.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("×")
            )),
        }
    };
    let (k, n) = shape(&ud, "joint_uvd")?;
    if shape(&xd, "joint_xyz")? != (k, n) {
        return Err("`joint_uvd` and `joint_xyz` have different sizes".into());
    }
    if let Some(bad) = uvd.iter().chain(&xyz).position(|v| !v.is_finite()) {
        return Err(format!("joint value {bad} is not finite"));
    }
    Ok(NyuJoints {
        kinects: k,
        frames: n,
        uvd,
        xyz,
    })
}

/// Depth in mm of an NYU depth PNG (`(G << 8) | B`), with its width and height.
pub fn decode_depth(png: &[u8]) -> Result<(u32, u32, Vec<u16>), String> {
    let img = crate::sample::decode_bounded(png).map_err(|e| format!("image: {e}"))?;
    let (w, h) = (img.width(), img.height());
    let rgb = match img {
        image::DynamicImage::ImageRgb8(i) => i,
        image::DynamicImage::ImageRgba8(_) => img.into_rgb8(),
        other => {
            return Err(format!(
                "image: {:?}, expected an 8-bit RGB depth PNG (depth = G·256 + B)",
                other.color()
            ));
        }
    };
    let depth = rgb
        .pixels()
        .map(|p| ((p.0[1] as u16) << 8) | p.0[2] as u16)
        .collect();
    Ok((w, h, depth))
}

/// The metric crop of one frame (see the module docs).
pub fn crop(
    depth: &[u16],
    width: u32,
    height: u32,
    joints_uvd: &[f32; 3 * JOINTS],
    joints_xyz: &[f32; 3 * JOINTS],
    size: u32,
    cube_mm: f32,
) -> Result<Frame, String> {
    if depth.len() != width as usize * height as usize {
        return Err(format!(
            "depth has {} values for a {width}×{height} frame",
            depth.len()
        ));
    }
    let (uc, vc, zc) = (
        joints_uvd[3 * PALM],
        joints_uvd[3 * PALM + 1],
        joints_uvd[3 * PALM + 2],
    );
    if zc.is_nan() || zc <= cube_mm / 2.0 {
        return Err(format!(
            "palm depth {zc} mm is not beyond half the {cube_mm} mm cube: no crop"
        ));
    }
    let half = cube_mm / 2.0;
    let (su, sv) = (half * FX / zc, half * FY / zc);
    let crop_box = [uc - su, vc - sv, uc + su, vc + sv];
    let n = size.max(1) as usize;
    let (pu, pv) = (2.0 * su / n as f32, 2.0 * sv / n as f32);
    let (front, back) = (zc - half, zc + half);
    let mut out = vec![0u16; n * n];
    for j in 0..n {
        let v = (crop_box[1] + (j as f32 + 0.5) * pv).round();
        if v < 0.0 || v >= height as f32 {
            continue;
        }
        for i in 0..n {
            let u = (crop_box[0] + (i as f32 + 0.5) * pu).round();
            if u < 0.0 || u >= width as f32 {
                continue;
            }
            let d = depth[v as usize * width as usize + u as usize];
            if d == 0 || d >= INVALID_DEPTH || d as f32 > back {
                continue;
            }
            out[j * n + i] = (d as f32).max(front).round() as u16;
        }
    }
    let mut uvd = *joints_uvd;
    for k in 0..JOINTS {
        uvd[3 * k] = (joints_uvd[3 * k] - crop_box[0]) / pu - 0.5;
        uvd[3 * k + 1] = (joints_uvd[3 * k + 1] - crop_box[1]) / pv - 0.5;
    }
    Ok(Frame {
        size: n as u32,
        depth: out,
        joints_uvd: uvd,
        joints_xyz: *joints_xyz,
        center_uvd: [uc, vc, zc],
        crop_box,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mat::{NumericData, write_mat};

    /// A `[K][N][36][3]` double array (column-major) whose value at (k, f, j, c) is `f(k, f, j, c)`.
    fn array(k: usize, n: usize, f: impl Fn(usize, usize, usize, usize) -> f64) -> MatValue {
        let mut data = vec![0f64; k * n * RAW_JOINTS * 3];
        for c in 0..3 {
            for j in 0..RAW_JOINTS {
                for fr in 0..n {
                    for kk in 0..k {
                        data[kk + k * (fr + n * (j + RAW_JOINTS * c))] = f(kk, fr, j, c);
                    }
                }
            }
        }
        MatValue::Numeric {
            dims: vec![k, n, RAW_JOINTS, 3],
            data: NumericData::F64(data),
        }
    }

    #[test]
    fn joints_come_out_of_matlab_order() {
        let value =
            |k: usize, f: usize, j: usize, c: usize| (1000 * k + 100 * f + 3 * j + c) as f64;
        let bytes = write_mat(
            &[
                ("joint_uvd".into(), array(3, 4, value)),
                (
                    "joint_xyz".into(),
                    array(3, 4, |k, f, j, c| -value(k, f, j, c)),
                ),
            ],
            true,
        );
        let joints = parse_joints(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((joints.kinects, joints.frames), (3, 4));
        let (uvd, xyz) = joints.eval_joints(0, 2);
        // Evaluated joint 13 is raw joint 32: u = 200 + 96, v = 297, d = 298.
        assert_eq!(&uvd[39..42], &[296.0, 297.0, 298.0]);
        assert_eq!(xyz[0], -200.0);
        let bad = write_mat(&[("joint_uvd".into(), array(1, 2, value))], false);
        let err = parse_joints(&bad).err().unwrap_or_default();
        assert!(err.contains("joint_xyz"), "{err}");
    }

    #[test]
    fn the_crop_centres_the_palm_and_clips_to_the_cube() {
        // A 640×480 frame: background at 2000 mm, a 40×40 px block at 700 mm around (400, 200),
        // one invalid pixel.
        let (w, h) = (640u32, 480u32);
        let mut depth = vec![2000u16; (w * h) as usize];
        for v in 180..220 {
            for u in 380..420 {
                depth[v * w as usize + u] = 700;
            }
        }
        depth[200 * w as usize + 400] = INVALID_DEPTH;
        let mut uvd = [0f32; 3 * JOINTS];
        uvd[3 * PALM..3 * PALM + 3].copy_from_slice(&[400.0, 200.0, 700.0]);
        uvd[0..3].copy_from_slice(&[410.0, 190.0, 690.0]);
        let f = crop(&depth, w, h, &uvd, &[0.0; 3 * JOINTS], 32, 300.0)
            .unwrap_or_else(|e| panic!("{e}"));
        // The palm is the crop's centre; the box is 300 mm at 700 mm: 126 px wide.
        assert!((f.joints_uvd[3 * PALM] - 15.5).abs() < 1e-4);
        assert!((f.crop_box[2] - f.crop_box[0] - 2.0 * 150.0 * FX / 700.0).abs() < 1e-3);
        // Joint 0 is 10 px right and up in the frame: 10 / (126 / 32) crop px from the centre.
        let step = (f.crop_box[2] - f.crop_box[0]) / 32.0;
        assert!((f.joints_uvd[0] - (15.5 + 10.0 / step)).abs() < 1e-3);
        // The block is hand (700 mm), the 2000 mm background is behind the cube: 0.
        let at = |i: usize, j: usize| f.depth[j * 32 + i];
        assert_eq!(at(14, 13), 700);
        assert_eq!(at(0, 0), 0);
        assert!(f.depth.iter().all(|&d| d == 0 || d == 700));
        let err = crop(
            &depth,
            w,
            h,
            &[0.0; 3 * JOINTS],
            &[0.0; 3 * JOINTS],
            32,
            300.0,
        )
        .err()
        .unwrap_or_default();
        assert!(err.contains("palm depth"), "{err}");
    }

    #[test]
    fn depth_pngs_decode_as_g_high_b_low() {
        let mut img = image::RgbImage::new(3, 1);
        img.put_pixel(0, 0, image::Rgb([9, 2, 188])); // 2·256 + 188 = 700
        img.put_pixel(1, 0, image::Rgb([0, 0x7D, 0x01])); // 32001
        let mut png = Vec::new();
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap_or_else(|e| panic!("{e}"));
        let (w, h, d) = decode_depth(&png).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((w, h), (3, 1));
        assert_eq!(d, vec![700, INVALID_DEPTH, 0]);
        assert!(decode_depth(b"not a png").is_err());
    }
}
