//! What gets censored and how: classes, per-class score thresholds, per-class
//! box expansion, mask shape and method. Read from the `[policy]` table of the
//! config file (or a stand-alone policy file) and overridden by flags.

use crate::detect::{class_index, CLASSES, DEFAULT_CENSORED};
use crate::error::ConfigError;
use crate::frame::{BBox, CensorMethod, Detection, Mask, MaskOrigin, MaskShape};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const N: usize = CLASSES.len();

/// Per-class overrides in a policy file.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClassRule {
    pub threshold: Option<f32>,
    pub keep_threshold: Option<f32>,
    pub expand: Option<f32>,
}

/// The policy as written in TOML.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyFile {
    /// Censored class names; empty means the default (exposed genitals,
    /// breasts, buttocks, anus).
    pub classes: Vec<String>,
    /// Minimum detector score for a censored class.
    pub threshold: f32,
    /// Hysteresis: a region already masked stays tracked (and masked) while
    /// its score is at least this, below `threshold`; new regions need
    /// `threshold`. Never above `threshold` (it is capped there).
    pub keep_threshold: f32,
    /// Box growth on every side, as a fraction of the box size.
    pub expand: f32,
    pub shape: MaskShape,
    pub censor: CensorMethod,
    /// Per-class threshold/expand, keyed by class name.
    pub class: BTreeMap<String, ClassRule>,
}

impl Default for PolicyFile {
    fn default() -> Self {
        PolicyFile {
            classes: Vec::new(),
            threshold: 0.25,
            keep_threshold: 0.1,
            expand: 0.1,
            shape: MaskShape::Rect,
            censor: CensorMethod::default(),
            class: BTreeMap::new(),
        }
    }
}

/// The resolved policy, indexed by class.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub censored: [bool; N],
    pub threshold: [f32; N],
    /// Per class, at most `threshold` (see [`PolicyFile::keep_threshold`]).
    pub keep: [f32; N],
    pub expand: [f32; N],
    pub shape: MaskShape,
    pub method: CensorMethod,
}

impl Default for Policy {
    fn default() -> Self {
        // The default file is valid by construction (names from CLASSES).
        Policy::from_file(&PolicyFile::default()).unwrap_or(Policy {
            censored: [true; N],
            threshold: [0.25; N],
            keep: [0.1; N],
            expand: [0.1; N],
            shape: MaskShape::Rect,
            method: CensorMethod::default(),
        })
    }
}

fn check_unit(key: &str, v: f32, lo: f32, hi: f32) -> Result<(), ConfigError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(ConfigError::Value {
            key: key.to_string(),
            value: v.to_string(),
            reason: format!("must be between {lo} and {hi}"),
        })
    }
}

fn lookup(name: &str) -> Result<usize, ConfigError> {
    class_index(name)
        .map(usize::from)
        .ok_or_else(|| ConfigError::UnknownClass(name.to_string()))
}

/// Checks a censor method's parameters.
pub fn validate_method(m: &CensorMethod) -> Result<(), ConfigError> {
    match *m {
        CensorMethod::Blur { strength } => check_unit("censor.strength", strength, 0.01, 4.0),
        CensorMethod::Pixelate { block } if block == 1 || block > 512 => Err(ConfigError::Value {
            key: "censor.block".into(),
            value: block.to_string(),
            reason: "must be 0 (auto) or 2..=512".into(),
        }),
        _ => Ok(()),
    }
}

impl Policy {
    pub fn from_file(f: &PolicyFile) -> Result<Policy, ConfigError> {
        check_unit("policy.threshold", f.threshold, 0.0, 1.0)?;
        check_unit("policy.keep_threshold", f.keep_threshold, 0.0, 1.0)?;
        check_unit("policy.expand", f.expand, 0.0, 2.0)?;
        validate_method(&f.censor)?;
        let mut p = Policy {
            censored: [false; N],
            threshold: [f.threshold; N],
            keep: [f.keep_threshold; N],
            expand: [f.expand; N],
            shape: f.shape,
            method: f.censor,
        };
        if f.classes.is_empty() {
            for name in DEFAULT_CENSORED {
                p.censored[lookup(name)?] = true;
            }
        } else {
            for name in &f.classes {
                p.censored[lookup(name)?] = true;
            }
        }
        for (name, rule) in &f.class {
            let i = lookup(name)?;
            if let Some(t) = rule.threshold {
                check_unit(&format!("policy.class.{name}.threshold"), t, 0.0, 1.0)?;
                p.threshold[i] = t;
            }
            if let Some(k) = rule.keep_threshold {
                check_unit(&format!("policy.class.{name}.keep_threshold"), k, 0.0, 1.0)?;
                p.keep[i] = k;
            }
            if let Some(e) = rule.expand {
                check_unit(&format!("policy.class.{name}.expand"), e, 0.0, 2.0)?;
                p.expand[i] = e;
            }
        }
        p.cap_keep();
        Ok(p)
    }

    /// Keeps every class's keep threshold at or under its threshold.
    fn cap_keep(&mut self) {
        for (k, t) in self.keep.iter_mut().zip(self.threshold) {
            *k = k.min(t);
        }
    }

    /// Parses a TOML policy (the `[policy]` table's contents).
    pub fn from_toml(text: &str, origin: &std::path::Path) -> Result<Policy, ConfigError> {
        let f: PolicyFile = toml::from_str(text).map_err(|e| ConfigError::File {
            path: origin.to_path_buf(),
            reason: e.to_string(),
        })?;
        Policy::from_file(&f)
    }

    /// Replaces the censored class set with a comma-separated list of names
    /// (`all` selects every class).
    pub fn set_classes(&mut self, list: &str) -> Result<(), ConfigError> {
        let mut censored = [false; N];
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if name.eq_ignore_ascii_case("all") {
                censored = [true; N];
            } else {
                censored[lookup(name)?] = true;
            }
        }
        if !censored.iter().any(|c| *c) {
            return Err(ConfigError::Value {
                key: "classes".into(),
                value: list.into(),
                reason: "names no class".into(),
            });
        }
        self.censored = censored;
        Ok(())
    }

    /// Whether a detection is of a censored class and above its threshold.
    pub fn accepts(&self, d: &Detection) -> bool {
        let i = d.class as usize;
        i < N && self.censored[i] && d.score >= self.threshold[i]
    }

    /// Whether a detection below [`Policy::accepts`] may still continue a
    /// region already masked: a censored class at its keep threshold.
    pub fn keeps(&self, d: &Detection) -> bool {
        let i = d.class as usize;
        i < N && self.censored[i] && d.score >= self.keep[i]
    }

    /// The lowest score the pipeline needs from the detector: the smallest
    /// keep threshold of a censored class (1 when no class is censored).
    pub fn score_floor(&self) -> f32 {
        self.keep
            .iter()
            .zip(self.censored)
            .filter(|(_, c)| *c)
            .map(|(k, _)| *k)
            .fold(1.0, f32::min)
    }

    /// The same policy with every threshold (and keep threshold) `margin`
    /// lower (at least 0): what the pipeline applies under the rect
    /// letterbox.
    pub fn lowered(&self, margin: f32) -> Policy {
        let mut p = self.clone();
        for t in p.threshold.iter_mut().chain(p.keep.iter_mut()) {
            *t = (*t - margin.max(0.0)).max(0.0);
        }
        p
    }

    /// Whether a class is censored at all (tracks of other classes are ignored).
    pub fn censors_class(&self, class: u8) -> bool {
        (class as usize) < N && self.censored[class as usize]
    }

    /// The mask for a box of a class, expanded by the class's rule.
    pub fn mask(&self, bbox: &BBox, class: u8, origin: MaskOrigin) -> Mask {
        let e = self.expand.get(class as usize).copied().unwrap_or(0.0);
        Mask {
            bbox: bbox.expanded(e, e),
            shape: self.shape,
            origin,
            class,
        }
    }

    /// The censored class names, for logs and the sidecar header.
    pub fn class_names(&self) -> Vec<&'static str> {
        CLASSES
            .iter()
            .zip(self.censored.iter())
            .filter(|(_, c)| **c)
            .map(|(n, _)| *n)
            .collect()
    }
}

/// Policy flags given on a command line, applied over a policy from
/// elsewhere (the config file, or the header of the sidecar an audit reads),
/// so that "what the flags changed" is known and can be reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyOverrides {
    /// `--policy FILE`: replaces the base policy whole.
    pub file: Option<PolicyFile>,
    /// `--classes A,B`: replaces the censored class list.
    pub classes: Option<Vec<String>>,
    /// `--threshold T`: the minimum score of every class.
    pub threshold: Option<f32>,
    pub shape: Option<MaskShape>,
    pub method: Option<CensorMethod>,
}

impl PolicyOverrides {
    /// Applies the flags over `base`, `--policy` first.
    pub fn apply(&self, base: &mut PolicyFile) {
        if let Some(f) = &self.file {
            *base = f.clone();
        }
        if let Some(c) = &self.classes {
            base.classes = c.clone();
        }
        if let Some(m) = self.method {
            base.censor = m;
        }
        if let Some(s) = self.shape {
            base.shape = s;
        }
        if let Some(t) = self.threshold {
            base.threshold = t;
        }
    }

    /// The flags given, by name (empty when none was).
    pub fn flags(&self) -> Vec<&'static str> {
        [
            (self.file.is_some(), "--policy"),
            (self.classes.is_some(), "--classes"),
            (self.threshold.is_some(), "--threshold"),
            (self.shape.is_some(), "--shape"),
            (self.method.is_some(), "--method"),
        ]
        .into_iter()
        .filter(|(given, _)| *given)
        .map(|(_, name)| name)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class: &str, score: f32) -> Detection {
        Detection {
            bbox: BBox::new(10.0, 10.0, 30.0, 50.0),
            class: class_index(class).unwrap(),
            score,
        }
    }

    #[test]
    fn default_censors_exposed_classes_only() {
        let p = Policy::default();
        assert!(p.accepts(&det("FEMALE_BREAST_EXPOSED", 0.5)));
        assert!(p.accepts(&det("ANUS_EXPOSED", 0.3)));
        assert!(!p.accepts(&det("FACE_FEMALE", 0.9)));
        assert!(!p.accepts(&det("FEMALE_BREAST_COVERED", 0.9)));
        assert!(!p.accepts(&det("BUTTOCKS_EXPOSED", 0.2)));
    }

    #[test]
    fn per_class_rules_apply() {
        let text = r#"
            classes = ["FACE_FEMALE", "BUTTOCKS_EXPOSED"]
            threshold = 0.3
            expand = 0.0
            shape = "ellipse"
            censor = { method = "pixelate", block = 12 }
            [class.BUTTOCKS_EXPOSED]
            threshold = 0.6
            expand = 0.5
        "#;
        let p = Policy::from_toml(text, std::path::Path::new("p.toml")).unwrap();
        assert!(p.accepts(&det("FACE_FEMALE", 0.31)));
        assert!(!p.accepts(&det("BUTTOCKS_EXPOSED", 0.5)));
        assert!(p.accepts(&det("BUTTOCKS_EXPOSED", 0.61)));
        assert_eq!(p.method, CensorMethod::Pixelate { block: 12 });
        let m = p.mask(&BBox::new(10.0, 10.0, 30.0, 50.0), 2, MaskOrigin::Detected);
        assert_eq!(m.bbox, BBox::new(0.0, -10.0, 40.0, 70.0));
        assert_eq!(m.shape, MaskShape::Ellipse);
        // Lowered (the rect letterbox): every class's bar moves, classes do not.
        let l = p.lowered(0.05);
        assert!(l.accepts(&det("FACE_FEMALE", 0.26)));
        assert!(!p.accepts(&det("FACE_FEMALE", 0.26)));
        assert!(l.accepts(&det("BUTTOCKS_EXPOSED", 0.56)));
        assert!(!l.accepts(&det("BUTTOCKS_EXPOSED", 0.54)));
        assert!(!l.accepts(&det("FACE_MALE", 0.99)));
        assert_eq!(p.lowered(0.0), p);
        assert_eq!(p.lowered(-1.0), p);
        assert!(p.lowered(5.0).accepts(&det("FACE_FEMALE", 0.0)));
    }

    #[test]
    fn keep_threshold_is_hysteresis_under_the_threshold() {
        let text = r#"
            classes = ["FACE_FEMALE", "BUTTOCKS_EXPOSED"]
            threshold = 0.3
            keep_threshold = 0.12
            [class.BUTTOCKS_EXPOSED]
            keep_threshold = 0.2
        "#;
        let p = Policy::from_toml(text, std::path::Path::new("p.toml")).unwrap();
        assert!(p.keeps(&det("FACE_FEMALE", 0.12)));
        assert!(!p.keeps(&det("FACE_FEMALE", 0.11)));
        assert!(!p.accepts(&det("FACE_FEMALE", 0.2)));
        assert!(!p.keeps(&det("BUTTOCKS_EXPOSED", 0.19)));
        assert!(!p.keeps(&det("FACE_MALE", 0.9)), "not a censored class");
        assert!((p.score_floor() - 0.12).abs() < 1e-6);
        assert!((p.lowered(0.05).score_floor() - 0.07).abs() < 1e-6);
        // A keep threshold above the threshold is capped there.
        let p = Policy::from_toml(
            "threshold = 0.05\nkeep_threshold = 0.2",
            std::path::Path::new("p.toml"),
        )
        .unwrap();
        assert!((p.score_floor() - 0.05).abs() < 1e-6);
        let e =
            Policy::from_toml("keep_threshold = -0.1", std::path::Path::new("p.toml")).unwrap_err();
        assert!(e.to_string().contains("policy.keep_threshold"), "{e}");
    }

    #[test]
    fn overrides_change_only_what_was_given() {
        let mut base = PolicyFile {
            classes: vec!["FACE_FEMALE".into()],
            threshold: 0.4,
            expand: 0.3,
            ..PolicyFile::default()
        };
        let none = PolicyOverrides::default();
        let kept = base.clone();
        none.apply(&mut base);
        assert_eq!(base, kept);
        assert!(none.flags().is_empty());
        let o = PolicyOverrides {
            classes: Some(vec!["FACE_MALE".into()]),
            threshold: Some(0.2),
            ..PolicyOverrides::default()
        };
        o.apply(&mut base);
        assert_eq!(base.classes, vec!["FACE_MALE".to_string()]);
        assert_eq!((base.threshold, base.expand), (0.2, 0.3));
        assert_eq!(o.flags(), vec!["--classes", "--threshold"]);
        // `--policy` replaces the base whole; the other flags still apply on top.
        let o = PolicyOverrides {
            file: Some(PolicyFile::default()),
            shape: Some(MaskShape::Ellipse),
            ..PolicyOverrides::default()
        };
        o.apply(&mut base);
        assert_eq!(
            base,
            PolicyFile {
                shape: MaskShape::Ellipse,
                ..PolicyFile::default()
            }
        );
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let p = std::path::Path::new("bad.toml");
        let e = Policy::from_toml("threshold = 1.5", p).unwrap_err();
        assert!(e.to_string().contains("policy.threshold"), "{e}");
        let e = Policy::from_toml("classes = [\"NOSE\"]", p).unwrap_err();
        assert!(e.to_string().contains("NOSE"), "{e}");
        let e = Policy::from_toml("colour = 3", p).unwrap_err();
        assert!(e.to_string().contains("bad.toml"), "{e}");
        let e =
            Policy::from_toml("censor = { method = \"blur\", strength = -1.0 }", p).unwrap_err();
        assert!(e.to_string().contains("strength"), "{e}");
        let mut d = Policy::default();
        assert!(d.set_classes(" , ").is_err());
        assert!(d.set_classes("face_female,FACE_MALE").is_ok());
        assert!(d.accepts(&det("FACE_MALE", 0.5)));
    }
}
