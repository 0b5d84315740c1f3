//! Class names for display.

const IMAGENET: &str = include_str!("imagenet_classes.txt");

/// ImageNet-1k class names (torchvision's list) for 1000-class models; None otherwise.
pub fn for_classes(classes: usize) -> Option<Vec<&'static str>> {
    if classes != 1000 {
        return None;
    }
    let names: Vec<&'static str> = IMAGENET.lines().collect();
    (names.len() == 1000).then_some(names)
}
