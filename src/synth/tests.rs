use std::sync::OnceLock;

use super::*;

/// The real photos when the checkout has them, else generated stand-ins
/// with the same names (geometry and pixel tests do not need the real ones).
fn photos() -> PathBuf {
    let real = default_photos_dir();
    if real.join(SPRITE_PHOTO).is_file() {
        return real;
    }
    static FAKE: OnceLock<Option<tempfile::TempDir>> = OnceLock::new();
    let dir = FAKE.get_or_init(|| {
        let dir = tempfile::tempdir().ok()?;
        let names = std::iter::once(SPRITE_PHOTO).chain(BACKGROUND_PHOTOS);
        for (k, name) in names.enumerate() {
            let img = RgbImage::from_fn(512, 384, |x, y| {
                image::Rgb([(x / 2) as u8, (y / 2) as u8, (k * 40 + 20) as u8])
            });
            img.save(dir.path().join(name)).ok()?;
        }
        Some(dir)
    });
    dir.as_ref()
        .map(|d| d.path().to_path_buf())
        .unwrap_or_default()
}

fn synth(s: Scenario) -> Synth {
    match Synth::new(s, SynthConfig::new(photos())) {
        Ok(x) => x,
        Err(e) => panic!("{s}: {e}"),
    }
}

fn centre_x(t: &GroundTruth) -> f32 {
    t.bbox.center().0
}

fn only(truth: &[GroundTruth]) -> GroundTruth {
    assert_eq!(truth.len(), 1, "{truth:?}");
    truth[0].clone()
}

#[test]
fn frames_are_deterministic() {
    for s in [Scenario::FastPan, Scenario::Crossing, Scenario::Zoom] {
        let (a, b) = (synth(s), synth(s));
        for i in [0, 17, 45, 89] {
            let (fa, fb) = (a.frame(i), b.frame(i));
            assert_eq!(fa.frame, fb.frame, "{s} frame {i}");
            assert_eq!(fa.truth, fb.truth);
            assert_eq!(a.frame(i).frame, fa.frame, "{s} frame {i} re-rendered");
        }
        assert_ne!(a.frame(0).frame, a.frame(45).frame, "{s} does not move");
    }
}

#[test]
fn truth_stays_inside_the_frame_in_every_scenario() {
    for &s in Scenario::all() {
        let sy = synth(s);
        let mut seen = 0;
        let f = sy.frame(30).frame;
        assert_eq!(f.format, PixelFormat::I420);
        assert_eq!((f.width, f.height), (1280, 720));
        assert_eq!(f.data.len(), Frame::expected_len(1280, 720));
        for i in 0..sy.len() {
            let truth = sy.truth(i);
            for t in &truth {
                let b = t.bbox;
                assert!(b.x0 >= 0.0 && b.y0 >= 0.0 && b.x1 <= 1280.0 && b.y1 <= 720.0);
                assert!(!b.is_empty(), "{s} {i}: {b:?}");
                assert!((MIN_VISIBLE..=1.0).contains(&t.visible_fraction));
            }
            seen += truth.len();
        }
        assert!(seen >= 70, "{s}: only {seen} truths");
    }
}

#[test]
fn constant_pan_moves_8_px_per_frame_and_face_is_large_enough() {
    let sy = synth(Scenario::ConstantPan);
    let xs: Vec<f32> = (0..90).map(|i| centre_x(&only(&sy.truth(i)))).collect();
    for w in xs.windows(2) {
        assert!((w[1] - w[0] - 8.0).abs() <= 1.0, "{w:?}");
    }
    let t = only(&sy.truth(0));
    assert!(t.bbox.width() >= 158.0, "face {:?}", t.bbox);
    assert_eq!(t.visible_fraction, 1.0);
}

#[test]
fn speeds_scale_with_height_and_frame_rate() {
    let mut cfg = SynthConfig::new(photos());
    (cfg.width, cfg.height, cfg.fps) = (1920, 1080, 60.0);
    let sy = Synth::new(Scenario::ConstantPan, cfg).unwrap();
    let dx = centre_x(&only(&sy.truth(11))) - centre_x(&only(&sy.truth(10)));
    assert!((dx - 6.0).abs() <= 1.0, "{dx}");
}

#[test]
fn fast_pan_is_fast_and_bounces() {
    let sy = synth(Scenario::FastPan);
    let xs: Vec<f32> = (0..90).map(|i| centre_x(&only(&sy.truth(i)))).collect();
    let dx: Vec<f32> = xs.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(dx.iter().all(|d| d.abs() <= 26.0));
    assert!(dx.iter().filter(|d| d.abs() >= 24.0).count() > 80);
    assert!(dx.iter().any(|d| *d > 0.0) && dx.iter().any(|d| *d < 0.0));
}

#[test]
fn zoom_grows_to_1_2x_around_the_centre_and_back() {
    let sy = synth(Scenario::Zoom);
    let base = only(&synth(Scenario::Static).truth(0)).bbox.width();
    let w = |i| only(&sy.truth(i)).bbox.width() / base;
    assert!((w(0) - 0.5).abs() < 0.02, "{}", w(0));
    assert!((w(45) - 1.2).abs() < 0.02, "{}", w(45));
    assert!((w(89) - 0.5).abs() < 0.02);
    for i in 0..90 {
        let (cx, cy) = only(&sy.truth(i)).bbox.center();
        assert!((cx - 640.0).abs() < 2.0 && (cy - 360.0).abs() < 2.0);
    }
}

#[test]
fn acceleration_starts_at_rest_and_speeds_up() {
    let sy = synth(Scenario::Acceleration);
    let xs: Vec<f32> = (0..90).map(|i| centre_x(&only(&sy.truth(i)))).collect();
    let dx: Vec<f32> = xs.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(dx[0] <= 1.0);
    assert!(dx[88] > 20.0);
    for w in dx.windows(2) {
        assert!(w[1] >= w[0] - 1.0, "{w:?}");
    }
}

#[test]
fn stop_start_alternates_15_frames() {
    let sy = synth(Scenario::StopStart);
    let xs: Vec<f32> = (0..90).map(|i| centre_x(&only(&sy.truth(i)))).collect();
    for i in 0..89 {
        let moving = (i / 15) % 2 == 0;
        let d = xs[i + 1] - xs[i];
        assert_eq!(d.abs() > 5.0, moving, "frame {i}: {d}");
    }
}

#[test]
fn crossing_has_two_faces_that_swap_sides() {
    let sy = synth(Scenario::Crossing);
    let (first, last) = (sy.truth(0), sy.truth(89));
    assert_eq!(first.len(), 2);
    assert_eq!(last.len(), 2);
    assert_eq!((first[0].object, first[1].object), (0, 1));
    assert!(centre_x(&first[0]) < centre_x(&first[1]));
    assert!(centre_x(&last[0]) > centre_x(&last[1]));
    // The back face is partly covered at the crossing, never lost.
    let min_back = (0..90)
        .map(|i| {
            sy.truth(i)
                .iter()
                .find(|t| t.object == 1)
                .map(|t| t.visible_fraction)
        })
        .map(|v| v.unwrap_or(0.0))
        .fold(1.0f32, f32::min);
    assert!((0.3..0.9).contains(&min_back), "{min_back}");
    assert!((0..90).all(|i| sy
        .truth(i)
        .iter()
        .any(|t| t.object == 0 && t.visible_fraction == 1.0)));
}

#[test]
fn occlusion_hides_the_face_with_occluder_pixels() {
    let sy = synth(Scenario::Occlusion);
    let hidden: Vec<usize> = (0..90).filter(|&i| sy.truth(i).is_empty()).collect();
    assert!((8..=12).contains(&hidden.len()), "{hidden:?}");
    assert!(
        hidden.windows(2).all(|w| w[1] == w[0] + 1),
        "one run: {hidden:?}"
    );
    assert!(hidden.iter().all(|&i| (35..55).contains(&i)));
    assert_eq!(only(&sy.truth(0)).visible_fraction, 1.0);
    let partial = (0..90)
        .filter_map(|i| sy.truth(i).first().map(|t| t.visible_fraction))
        .filter(|v| *v < 1.0)
        .count();
    assert!(partial >= 4, "{partial}");
    // Where the face would be, the pixels are the slab's.
    let i = hidden[hidden.len() / 2];
    let layout = Scenario::Occlusion.layout(&sy.geom, i);
    let (ox, oy) = layout.occluder.unwrap();
    let p = layout.sprites[0];
    let f = sy.geom.face_in_sprite(p.height, false, p.look);
    let frame = sy.frame(i).frame;
    for y in (p.y + f[1] as i64..p.y + f[3] as i64).step_by(7) {
        for x in (p.x + f[0] as i64..p.x + f[2] as i64).step_by(7) {
            let got = frame.y()[y as usize * 1280 + x as usize];
            let want = sy.slab.y[(y - oy) as usize * sy.slab.w + (x - ox) as usize];
            assert_eq!(got, want, "({x},{y})");
        }
    }
}

#[test]
fn sprite_is_drawn_where_the_truth_says() {
    let sy = synth(Scenario::Static);
    let layout = Scenario::Static.layout(&sy.geom, 0);
    let p = layout.sprites[0];
    let sprite = sy.sprite(&p);
    let t = only(&sy.truth(0));
    let frame = sy.frame(0).frame;
    let (x, y) = (t.bbox.x0.ceil() as i64, t.bbox.y0.ceil() as i64);
    for (dx, dy) in [(0, 0), (50, 40), (100, 90)] {
        let (fx, fy) = (x + dx, y + dy);
        let s = (fy - p.y) as usize * sprite.w + (fx - p.x) as usize;
        assert_eq!(frame.y()[fy as usize * 1280 + fx as usize], sprite.y[s]);
    }
    assert!(synth(Scenario::Static).frames().all(|f| f.frame == frame));
}

#[test]
fn hard_cut_switches_background_and_position_at_midpoint() {
    let sy = synth(Scenario::HardCut);
    let corner = |i: usize| {
        let f = sy.frame(i).frame;
        (0..40)
            .map(|y| f.y()[y * 1280..y * 1280 + 40].to_vec())
            .collect::<Vec<_>>()
    };
    assert_eq!(corner(0), corner(44));
    assert_ne!(corner(44), corner(45));
    assert_eq!(corner(45), corner(89));
    let (a, b) = (only(&sy.truth(44)), only(&sy.truth(45)));
    assert!((centre_x(&a) - centre_x(&b)).abs() > 300.0);
    let step = centre_x(&only(&sy.truth(44))) - centre_x(&only(&sy.truth(43)));
    assert!(step.abs() < 5.0);
}

#[test]
fn truth_json_lines_match_truth() {
    let sy = synth(Scenario::Crossing);
    let text = sy.truth_json_lines();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 90);
    for (i, line) in lines.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["frame"], i);
        let truth = sy.truth(i);
        let arr = v["truth"].as_array().unwrap();
        assert_eq!(arr.len(), truth.len());
        for (j, t) in truth.iter().enumerate() {
            assert_eq!(arr[j]["object"], t.object);
            let x1 = arr[j]["bbox"][2].as_f64().unwrap();
            assert!((x1 - t.bbox.x1 as f64).abs() < 1e-3);
            assert!(arr[j]["visible"].as_f64().unwrap() >= 0.1);
        }
    }
}

#[test]
fn truth_files_read_back_what_synth_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let p = truth_path(&dir.path().join("clip.mp4"));
    assert!(p.to_string_lossy().ends_with("clip.mp4.truth.jsonl"));
    // Occlusion: faces with hidden parts; crossing: two faces per frame.
    for s in [Scenario::Occlusion, Scenario::Crossing] {
        let sy = synth(s);
        std::fs::write(&p, sy.truth_json_lines()).unwrap();
        let back = read_truth(&p).unwrap();
        assert_eq!(back.len(), sy.len());
        for (i, faces) in &back {
            assert_eq!(faces, &sy.truth(*i as usize), "{s} frame {i}");
        }
        if s == Scenario::Occlusion {
            assert!(back.values().flatten().any(|t| !t.hidden.is_empty()));
        }
    }
}

#[test]
fn malformed_truth_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("clip.mp4.truth.jsonl");
    let ok = r#"{"frame":0,"truth":[{"object":0,"bbox":[1,2,30,40],"visible":1.0}]}"#;
    for (text, needle) in [
        (format!("{ok}\nnot json"), "line 2:"),
        (format!("{ok}\n{ok}"), "line 2: frame 0 is listed twice"),
        (r#"{"frame":0}"#.to_string(), "line 1: missing field `truth`"),
        (
            r#"{"frame":0,"truth":[{"object":0,"bbox":[30,2,1,40],"visible":1.0}]}"#.into(),
            "is not a box",
        ),
        (
            r#"{"frame":0,"truth":[{"object":0,"bbox":[1,2,3],"visible":1.0}]}"#.into(),
            "line 1:",
        ),
        (
            r#"{"frame":0,"truth":[{"object":0,"bbox":[1,2,30,40],"visible":1.5}]}"#.into(),
            "visible 1.5",
        ),
        (
            r#"{"frame":0,"truth":[{"object":0,"bbox":[1,2,30,40],"visible":1,"hidden":[[5,5,2,2]]}]}"#
                .into(),
            "hidden:",
        ),
    ] {
        std::fs::write(&p, &text).unwrap();
        let e = read_truth(&p).unwrap_err().to_string();
        assert!(e.contains(needle) && e.contains("clip.mp4.truth.jsonl"), "{text}: {e}");
    }
    let e = read_truth(&dir.path().join("none.jsonl"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("none.jsonl"), "{e}");
    std::fs::write(&p, format!("{ok}\n\n")).unwrap();
    assert_eq!(
        read_truth(&p).unwrap()[&0][0].bbox,
        BBox::new(1.0, 2.0, 30.0, 40.0)
    );
}

#[test]
fn missing_photos_give_clear_errors() {
    let e = Synth::new(Scenario::Static, SynthConfig::new("/nonexistent/photos"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("/nonexistent/photos") && e.contains("scripts/setup.sh"),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    let e = Synth::new(Scenario::Static, SynthConfig::new(dir.path()))
        .err()
        .unwrap();
    assert!(
        matches!(&e, Error::Io { path, .. } if path.ends_with(SPRITE_PHOTO)),
        "{e}"
    );
    assert!(e.to_string().contains("scripts/setup.sh"));

    std::fs::write(dir.path().join(SPRITE_PHOTO), b"not a png").unwrap();
    let e = Synth::new(Scenario::Static, SynthConfig::new(dir.path()))
        .err()
        .unwrap();
    assert!(
        matches!(e, Error::Media(MediaError::Malformed { .. })),
        "{e}"
    );
}

#[test]
fn bad_config_is_rejected() {
    let mut cfg = SynthConfig::new(photos());
    cfg.width = 10;
    assert!(matches!(
        Synth::new(Scenario::Static, cfg.clone()),
        Err(Error::Media(MediaError::BadDimensions { .. }))
    ));
    cfg.width = 1280;
    cfg.fps = 0.0;
    assert!(Synth::new(Scenario::Static, cfg.clone()).is_err());
    cfg.fps = 30.0;
    cfg.frames = 0;
    assert!(Synth::new(Scenario::Static, cfg).is_err());
}

#[test]
fn covered_area_counts_overlaps_once() {
    let region = Rect::new(0.0, 0.0, 10.0, 10.0);
    let a = Rect::new(-5.0, 0.0, 5.0, 10.0);
    let b = Rect::new(3.0, 2.0, 8.0, 6.0);
    assert_eq!(covered_area(&region, &[a]), 50.0);
    assert_eq!(covered_area(&region, &[a, b]), 50.0 + 3.0 * 4.0);
    assert_eq!(covered_area(&region, &[]), 0.0);
    assert_eq!(
        covered_area(&region, &[Rect::new(20.0, 0.0, 30.0, 5.0)]),
        0.0
    );
}

#[test]
fn odd_sizes_render_without_panicking() {
    let mut cfg = SynthConfig::new(photos());
    (cfg.width, cfg.height, cfg.frames) = (333, 199, 7);
    for &s in Scenario::all() {
        let sy = Synth::new(s, cfg.clone()).unwrap();
        for f in sy.frames() {
            assert_eq!(f.frame.data.len(), Frame::expected_len(333, 199));
        }
    }
}

#[test]
fn visible_parts_are_the_box_less_what_covers_it() {
    let b = BBox::new(0.0, 0.0, 10.0, 10.0);
    assert_eq!(visible_parts(&b, &[]), vec![b]);
    let area = |v: &[BBox]| v.iter().map(|r| r.area()).sum::<f32>();
    // The left half covered, and a corner inside it: 50 px² hidden.
    let parts = visible_parts(
        &b,
        &[
            BBox::new(-5.0, -5.0, 5.0, 20.0),
            BBox::new(0.0, 0.0, 3.0, 3.0),
        ],
    );
    assert!((area(&parts) - 50.0).abs() < 1e-4, "{parts:?}");
    assert!(parts.iter().all(|p| p.x0 >= 5.0));
    // A hole in the middle.
    let parts = visible_parts(&b, &[BBox::new(4.0, 4.0, 6.0, 6.0)]);
    assert!((area(&parts) - 96.0).abs() < 1e-4);
    // Fully covered.
    assert!(visible_parts(&b, &[BBox::new(-1.0, -1.0, 11.0, 11.0)]).is_empty());
    // The occlusion scenario records what hides the face.
    let sy = synth(Scenario::Occlusion);
    let partly: Vec<GroundTruth> = (0..90)
        .flat_map(|i| sy.truth(i))
        .filter(|t| t.visible_fraction < 0.99 && t.visible_fraction > 0.2)
        .collect();
    assert!(!partly.is_empty());
    for t in partly {
        let seen = area(&t.visible_parts()) / t.bbox.area();
        // The face box is inside the frame here, so what is seen of the box
        // is the visible fraction of the face.
        assert!((seen - t.visible_fraction).abs() < 0.02, "{seen} vs {t:?}");
    }
}

/// `mixed`: a face in view 10% of the time, in spells of 15 frames at
/// 30 fps starting at frame 40 of every 150, none in between.
#[test]
fn mixed_shows_a_face_in_spells() {
    let sy = Synth::new(
        Scenario::Mixed,
        SynthConfig {
            frames: 300,
            ..SynthConfig::new(photos())
        },
    )
    .unwrap();
    let with: Vec<usize> = (0..sy.len()).filter(|&i| !sy.truth(i).is_empty()).collect();
    let want: Vec<usize> = (40..55).chain(190..205).collect();
    assert_eq!(with, want);
    assert_eq!("mixed".parse::<Scenario>().unwrap(), Scenario::Mixed);
    assert!(!Scenario::all().contains(&Scenario::Mixed));
}
