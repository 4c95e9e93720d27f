"""CelebA's metadata vocabulary: the 40 attribute names, the split codes and the file names.

Both the real CelebA folder and the built-in synthetic faces use these, so that one reader
handles either. The names and their order are CelebA's own (the header line of
`list_attr_celeba.txt`, also TFDS `celeb_a`'s `ATTR_HEADINGS`): attribute vectors everywhere in
the project are in this order.
"""

# The order matters: it is the column order of list_attr_celeba.txt and of every attribute vector.
ATTRIBUTE_NAMES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
NUM_ATTRIBUTES = len(ATTRIBUTE_NAMES)

# list_eval_partition.txt codes each image's split as a digit.
SPLIT_NAMES = {0: "train", 1: "validation", 2: "test"}
SPLIT_CODES = {name: code for code, name in SPLIT_NAMES.items()}

# File and folder names of a CelebA folder ("Align&Cropped Images" release).
IMAGE_DIR = "img_align_celeba"
PARTITION_FILE = "list_eval_partition.txt"
ATTRIBUTE_FILE = "list_attr_celeba.txt"
LANDMARK_FILE = "list_landmarks_align_celeba.txt"
# Headings of LANDMARK_FILE, in CelebA's column order (pixel coordinates in the 178x218 image).
LANDMARK_NAMES = (
    "lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
    "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y",
)
