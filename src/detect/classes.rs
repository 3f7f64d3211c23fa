//! NudeNet 320n class labels, in the order of the model's score rows.

/// Class names; `Detection::class` indexes this array.
pub const CLASSES: [&str; 18] = [
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
];

/// Classes censored when the user names none: exposed genitals, breasts,
/// buttocks and anus.
pub const DEFAULT_CENSORED: [&str; 5] = [
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "BUTTOCKS_EXPOSED",
    "ANUS_EXPOSED",
];

/// Index of a class by name, ignoring ASCII case (config files and CLI flags
/// are typed by people).
pub fn class_index(name: &str) -> Option<u8> {
    CLASSES
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name.trim()))
        .and_then(|i| u8::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_order_and_lookup() {
        assert_eq!(class_index("FEMALE_GENITALIA_COVERED"), Some(0));
        assert_eq!(class_index("face_female"), Some(1));
        assert_eq!(class_index("Buttocks_Covered"), Some(17));
        assert_eq!(class_index("FACE_MALE"), Some(12));
        assert_eq!(class_index("NOPE"), None);
        assert_eq!(class_index(""), None);
    }

    #[test]
    fn names_are_unique_and_defaults_exist() {
        for (i, a) in CLASSES.iter().enumerate() {
            assert_eq!(class_index(a), Some(i as u8));
        }
        for d in DEFAULT_CENSORED {
            let i = class_index(d).map(usize::from);
            assert!(i.is_some(), "{d}");
            assert!(d.ends_with("_EXPOSED"));
        }
        assert_eq!(class_index("FEMALE_BREAST_EXPOSED"), Some(3));
        assert_eq!(class_index("MALE_GENITALIA_EXPOSED"), Some(14));
    }
}
