"""A user's own COCO instances json as a detectron2 dataset, named on the command line.

    python tools/train_net.py --config-file my.yaml \\
        --dataset mine_train=ann/train.json:images/train \\
        --dataset mine_val=ann/val.json:images/val \\
        DATASETS.TRAIN "('mine_train',)" DATASETS.TEST "('mine_val',)"

Each `--dataset NAME=ANNOTATIONS_JSON:IMAGE_DIR` is checked, then registered with detectron2's
`register_coco_instances`, whose `load_coco_json` reads it when training starts. The check
turns what load_coco_json and pycocotools answer with a KeyError, an assert or silence (an
annotation of an image id that is not in the file is dropped with a warning, an object
without a polygon of 3 points is dropped with its box, a picture listed twice is read as two
images with part of its objects each, a class of crowd regions only is never trained) into one
DatasetError naming the file and its first bad entry. A box with no positive width or height
is not an error here: training's check (DATALOADER.ON_BAD_BOX, resnext_det/data/checks.py)
leaves such boxes out with a count ("skip", the default) or stops naming them ("error").

The number of classes is the number of `categories`; category ids need not be contiguous
(detectron2 maps them in sorted order to 0..K-1, as in COCO). The model's NUM_CLASSES is
taken from the json when the config file and the overrides leave it unset, and must equal it
when they set it.
"""
import json
import os
import stat
from collections import namedtuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from ..config.errors import is_int, is_number
from .checks import NUM_EXAMPLES, DatasetError

DatasetSpec = namedtuple("DatasetSpec", "name json_file image_root")
CocoSummary = namedtuple("CocoSummary", "thing_classes id_map num_images num_annotations "
                                        "num_bad_boxes first_bad_box")
_FORM = "NAME=ANNOTATIONS_JSON:IMAGE_DIR"
_SECTIONS = ("images", "annotations", "categories")


def add_dataset_argument(parser):
    """Add the repeatable `--dataset NAME=ANNOTATIONS_JSON:IMAGE_DIR` option to `parser`."""
    parser.add_argument(
        "--dataset", action="append", default=[], metavar=_FORM,
        help="register a COCO instances json and its image folder under NAME, for use in "
             "DATASETS.TRAIN / DATASETS.TEST (repeatable; give it before the KEY VALUE overrides)")
    return parser


def parse_dataset_arg(text):
    """'NAME=ANNOTATIONS_JSON:IMAGE_DIR' -> DatasetSpec (absolute paths).

    The json path ends at the first ':' after which the left part is an existing file, else
    at the last ':' (so a json path may hold ':' when the file exists).
    """
    name, eq, rest = text.partition("=")
    colons = [i for i, c in enumerate(rest) if c == ":"]
    if not eq or not name.strip() or not colons:
        raise DatasetError(f"--dataset {text!r} is not valid: expected {_FORM}, e.g. "
                           "mine_train=annotations/train.json:images/train.")
    cut = next((i for i in colons if os.path.isfile(rest[:i])), colons[-1])
    json_file, image_root = rest[:cut], rest[cut + 1:]
    if not json_file or not image_root:
        raise DatasetError(f"--dataset {text!r} is not valid: both the annotations json and the "
                           f"image folder are needed ({_FORM}).")
    return DatasetSpec(name.strip(), os.path.abspath(json_file), os.path.abspath(image_root))


def _error(json_file, where, problem, fix="Fix the file, or leave it out of --dataset."):
    return DatasetError(f"--dataset annotations {json_file!r}: {where}: {problem}. {fix}")


def _read_json(json_file):
    if not os.path.isfile(json_file):
        raise DatasetError(f"--dataset annotations {json_file!r} does not exist"
                           f"{' (it is a folder)' if os.path.isdir(json_file) else ''}. Give "
                           f"the COCO json first, then the image folder: {_FORM}.")
    with open(json_file, "rb") as f:
        raw = f.read()
    if raw.startswith(b"\xef\xbb\xbf"):  # json.loads(bytes) takes it; pycocotools' json.load does not
        raise _error(json_file, "the file", "starts with a UTF-8 byte order mark, which "
                     "pycocotools and detectron2's loader cannot read",
                     "Save it as UTF-8 without a BOM.")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _error(json_file, "the file", f"is not JSON ({e})",
                     "Give a COCO instances json (http://cocodataset.org/#format-data).") from None
    if not isinstance(data, dict):
        raise _error(json_file, "the top level", f"is a JSON {type(data).__name__}, not an object "
                     "with 'images', 'annotations' and 'categories'",
                     "Give a COCO instances json, not a results file.")
    for section in _SECTIONS:
        if not isinstance(data.get(section), list) or not data[section]:
            found = "missing" if section not in data else (
                "empty" if data[section] == [] else f"a {type(data[section]).__name__}, not a list")
            raise _error(json_file, f"'{section}'", f"is {found}; a COCO instances json has a "
                         f"non-empty list of {section}")
    return data


MAX_ID = 2 ** 53  # COCO evaluation (faster-coco-eval) holds ids as doubles: exact below this


def _id_problem(key, value):
    if not is_int(value):
        return f"has {key} {value!r}; expected an integer"
    if abs(value) >= MAX_ID:  # faster-coco-eval: a RuntimeError after the training
        return (f"has {key} {value!r}; expected an integer below 2^53 in size (COCO "
                "evaluation holds ids as doubles, which cannot tell such ids apart)")
    return None


def _entry(section, index, item):
    ident = f" (id {item['id']!r})" if isinstance(item, dict) and "id" in item else ""
    return f"{section}[{index}]{ident}"


def _first(items, problem_of, json_file, section):
    """Raise naming the first item of `section` that is not an object with an integer id
    (_id_problem) or whose problem_of(item) is not None."""
    for index, item in enumerate(items):
        problem = ((_id_problem("id", item.get("id")) or problem_of(item))
                   if isinstance(item, dict) else f"is a {type(item).__name__}, not an object")
        if problem:
            raise _error(json_file, _entry(section, index, item), problem)


def _unique(items, json_file, section, key="id"):
    """{item[key]: index}; an item repeating an earlier one's `key` is an error. Two
    categories of one name made one class of the results (AP-<name>), and drawn labels
    that cannot be told apart."""
    seen = {}
    for index, item in enumerate(items):
        if item[key] in seen:
            repeated = "the id" if key == "id" else f"the name {item[key]!r}"
            why = "ids must be unique" if key == "id" else (
                "names must be unique (results and drawings are by name)")
            raise _error(json_file, _entry(section, index, item),
                         f"repeats {repeated} of {section}[{seen[item[key]]}]; {why}")
        seen[item[key]] = index
    return seen


def _category_problem(cat):
    if not isinstance(cat.get("name"), str) or not cat["name"]:
        return f"has name {cat.get('name')!r}; expected a non-empty string"
    return None


def _image_problem(img):
    if not isinstance(img.get("file_name"), str) or not img["file_name"]:
        return f"has file_name {img.get('file_name')!r}; expected a path under the image folder"
    for key in ("width", "height"):
        if not is_int(img.get(key)) or img[key] <= 0:
            return f"has {key} {img.get(key)!r}; expected a positive integer (pixels)"
    return None


def _annotation_problem(ann, images, category_ids):
    """`images`: {id: image entry}."""
    for key in ("image_id", "category_id"):  # its "id": _first
        if problem := _id_problem(key, ann.get(key)):
            return problem
    if ann["id"] <= 0:  # COCOeval stores the matched object's id, 0 for none (evaluation.coco)
        return (f"has id {ann['id']}; COCO evaluation takes a match to object 0 for 'matched to "
                "nothing' (pycocotools, faster-coco-eval), and faster-coco-eval one to a "
                "negative id: a detection of this object counts as a false one (AP too low). "
                "Number annotations from 1, as detectron2 and COCO do")
    if ann.get("image_id") not in images:
        return f"has image_id {ann.get('image_id')!r}, which is the id of no entry of 'images'"
    if ann.get("category_id") not in category_ids:
        return (f"has category_id {ann.get('category_id')!r}, which is the id of no entry of "
                f"'categories' (ids {sorted(category_ids)[:10]})")
    box = ann.get("bbox")
    if not isinstance(box, list) or len(box) != 4 or not all(is_number(v) for v in box):
        return f"has bbox {box!r}; expected [x, y, width, height], 4 finite numbers"
    # COCO's evaluation reads both: pycocotools stops on a KeyError at the end of training,
    # faster-coco-eval takes a missing area as 0 (every object "small": wrong APs / APm / APl)
    area = ann.get("area")
    if not (is_number(area) and area >= 0):
        return (f"has area {area!r}; expected a number >= 0 (COCO evaluation sorts objects into "
                "small / medium / large by it: the mask's pixel count, or the box's width x height)")
    if ann.get("iscrowd") not in (0, 1) or isinstance(ann.get("iscrowd"), bool):
        return f"has iscrowd {ann.get('iscrowd')!r}; expected 0 (an object) or 1 (a crowd region)"
    if ann.get("ignore", 0):
        return ("has 'ignore' set, which detectron2 does not support; remove the annotation or "
                "the flag")
    keypoints = ann.get("keypoints")
    if keypoints is not None and not (isinstance(keypoints, list) and len(keypoints) % 3 == 0
                                      and all(is_number(v) for v in keypoints)):
        return (f"has keypoints {_short(keypoints)}; expected [x1, y1, v1, x2, y2, v2, ...], "
                "numbers in threes")  # load_coco_json: a TypeError
    return (_segmentation_problem(ann.get("segmentation"))
            or (None if ann["iscrowd"] else _rle_problem(ann.get("segmentation"),
                                                         images[ann["image_id"]])))


def _rle_problem(segm, image):
    """An object's RLE mask decodes to its image's size (the data loader raised on it, at
    the first time it sampled the image: pycocotools' ValueError, or a bare assert)."""
    if not isinstance(segm, dict):
        return None
    size, expected = segm["size"], [image["height"], image["width"]]
    if size != expected:
        return (f"has an RLE mask of size {size}, not its image's [height, width] {expected}")
    from pycocotools import mask as mask_util

    counts = segm["counts"]
    try:
        if isinstance(counts, list):  # uncompressed: run lengths adding up to h x w
            if not all(is_int(c) and c >= 0 for c in counts) or sum(counts) != size[0] * size[1]:
                raise ValueError("run lengths")
        else:
            mask_util.decode({"size": size, "counts": counts.encode()})
    except ValueError:
        return (f"has segmentation {_short(segm)}, an RLE whose counts do not decode to "
                f"{size[0]} x {size[1]} pixels")
    return None


def _segmentation_problem(segm):
    """A mask as load_coco_json reads it: polygons [[x1, y1, x2, y2, ...], ...] or an RLE
    {"counts", "size"}. It keeps the polygons of >= 3 points and drops an object that has
    none, box included, with only a count in a warning; other forms are a TypeError there."""
    if not segm:  # absent or empty: an object without a mask
        return None
    if isinstance(segm, dict):
        size = segm.get("size")
        if (not isinstance(segm.get("counts"), (str, list)) or not isinstance(size, list)
                or len(size) != 2 or not all(is_int(v) and v > 0 for v in size)):
            return (f"has segmentation {_short(segm)}; an RLE mask is {{'counts': ..., 'size': "
                    "[height, width]}")
        return None
    if not isinstance(segm, list) or not all(
            isinstance(p, list) and all(is_number(v) for v in p) for p in segm):
        return (f"has segmentation {_short(segm)}; expected polygons [[x1, y1, x2, y2, ...], "
                "...] (a list of lists of numbers) or an RLE {'counts': ..., 'size': [h, w]}")
    if not any(len(p) % 2 == 0 and len(p) >= 6 for p in segm):
        return (f"has segmentation {_short(segm)}, no polygon of 3 points or more (an even "
                "count >= 6 of numbers); detectron2's load_coco_json drops such an object, box "
                "included. Give it a polygon of >= 3 points, or leave 'segmentation' out (a box "
                "without a mask)")
    return None


def _short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...]"


def _is_bad_box(ann):
    return not ann.get("iscrowd", 0) and (ann["bbox"][2] <= 0 or ann["bbox"][3] <= 0)


def _image_stats(images, json_file, image_root):
    """os.stat of each entry's picture, one per image (118k: 0.3 s); a missing one is an
    error naming the first few."""
    if not os.path.isdir(image_root):
        raise DatasetError(f"--dataset image folder {image_root!r} (for {json_file!r}) is not a "
                           f"folder. Give the folder the json's file_name entries are relative "
                           f"to: {_FORM}.")
    stats = [_stat(os.path.join(image_root, img["file_name"])) for img in images]
    missing = [img["file_name"] for img, found in zip(images, stats) if found is None]
    if missing:
        shown = ", ".join(repr(f) for f in missing[:NUM_EXAMPLES])
        more = ", ..." if len(missing) > NUM_EXAMPLES else ""
        raise DatasetError(
            f"--dataset annotations {json_file!r}: {len(missing)} of {len(images)} images are not "
            f"under the image folder {image_root!r}: {shown}{more}. "
            "Give the folder their file_name entries are relative to.")
    return stats


def _stat(path):
    """os.stat of a file (links followed, as os.path.isfile), or None."""
    try:
        found = os.stat(path)
    except (OSError, ValueError):  # missing, not allowed, a NUL in the name
        return None
    return found if stat.S_ISREG(found.st_mode) else None


def _unique_files(images, stats, json_file):
    """One entry per picture: detectron2 reads a picture listed twice as two images, each
    with only the objects of its own entry, so the other entry's objects are background in
    training and each detection of them a false positive in evaluation (COCO AP too low)."""
    seen = {}  # (device, inode) of each file: links too (realpath: 8x the time of a stat)
    for index, (img, found) in enumerate(zip(images, stats)):
        path = (found.st_dev, found.st_ino)
        if path in seen:
            first = seen[path]
            raise _error(json_file, _entry("images", index, img),
                         f"has file_name {img['file_name']!r}, the picture of "
                         f"{_entry('images', first, images[first])} (file_name "
                         f"{images[first]['file_name']!r}); detectron2 would read it as two "
                         "images, each with part of its objects",
                         "List each picture once, with all its annotations under its image id.")
        seen[path] = index


def _crowd_only_class(data, json_file):
    """A class none of whose objects detectron2 trains on: every annotation is a crowd region
    (iscrowd 1), which its mapper drops from training and COCO evaluation ignores (its AP
    is nan). Datumaro's COCO export, CVAT's, writes every mask drawn as a bitmap so."""
    counts = {}  # category id: [crowd regions, objects, index of the first crowd region]
    for index, ann in enumerate(data["annotations"]):
        count = counts.setdefault(ann["category_id"], [0, 0, index])
        count[0 if ann["iscrowd"] else 1] += 1
    for index, cat in enumerate(data["categories"]):
        crowd, objects, first = counts.get(cat["id"], (0, 0, None))
        if crowd and not objects:
            example = _entry("annotations", first, data["annotations"][first])
            raise _error(json_file, _entry("categories", index, cat),
                         f"{cat['name']!r}: all {crowd} of its annotations (e.g. {example}) are "
                         "crowd regions (iscrowd 1), which detectron2 never trains on and COCO "
                         "evaluation ignores: the class would be neither learned nor scored",
                         "Set iscrowd 0 on its objects (CVAT's COCO export marks every mask "
                         "drawn as a bitmap iscrowd 1), or leave the class out.")


def check_coco_json(json_file, image_root):
    """Read and check a COCO instances json and its image folder.

    Checked: the file is JSON; 'images', 'annotations' and 'categories' are non-empty lists;
    ids are integers below 2^53 in size and unique per section, no annotation id 0, category
    names unique; each image has a file_name under `image_root` (no picture twice), a width
    and a height; no class has crowd regions only (iscrowd 1: never trained on); each
    annotation names an existing image and category, has a bbox of 4 finite numbers, an
    area, iscrowd 0 or 1, keypoints (if any) in threes, and a segmentation (if any) that
    load_coco_json keeps: a polygon of >= 3 points or an RLE (an object's decodes to its
    image's size). Boxes with no positive width or height are counted, not refused.

    Args:
        json_file (str): the annotations.
        image_root (str): the folder the images' file_name entries are relative to.
    Returns:
        CocoSummary: thing_classes and id_map ({category id: contiguous id}) as detectron2's
        load_coco_json sets them, counts, and the first box of no positive size (or None).
    Raises:
        DatasetError: naming `json_file` and its first bad entry.
    """
    data = _read_json(json_file)
    _first(data["categories"], _category_problem, json_file, "categories")
    category_ids = _unique(data["categories"], json_file, "categories")
    _unique(data["categories"], json_file, "categories", "name")
    _first(data["images"], _image_problem, json_file, "images")
    _unique(data["images"], json_file, "images")
    images = {img["id"]: img for img in data["images"]}
    _first(data["annotations"], lambda a: _annotation_problem(a, images, category_ids),
           json_file, "annotations")
    _unique(data["annotations"], json_file, "annotations")
    _unique_files(data["images"], _image_stats(data["images"], json_file, image_root), json_file)
    _crowd_only_class(data, json_file)
    bad = [(i, a) for i, a in enumerate(data["annotations"]) if _is_bad_box(a)]
    cats = sorted(data["categories"], key=lambda c: c["id"])
    first_bad = f"{_entry('annotations', *bad[0])} bbox {bad[0][1]['bbox']}" if bad else None
    return CocoSummary(
        thing_classes=[c["name"] for c in cats], id_map={c["id"]: i for i, c in enumerate(cats)},
        num_images=len(data["images"]), num_annotations=len(data["annotations"]),
        num_bad_boxes=len(bad), first_bad_box=first_bad)


def register_coco_json(name, json_file, image_root):
    """Check a COCO instances json (check_coco_json), then register it under `name`.

    The metadata holds json_file, image_root, evaluator_type "coco", thing_classes and
    thing_dataset_id_to_contiguous_id, the last two as load_coco_json will set them. A name
    already registered for the same files is kept; one registered otherwise (e.g. one of
    detectron2's builtin COCO names) is a DatasetError.

    Returns:
        CocoSummary.
    """
    summary = check_coco_json(json_file, image_root)
    if name in DatasetCatalog.list():
        meta = MetadataCatalog.get(name)
        if meta.get("json_file", None) == json_file and meta.get("image_root", None) == image_root:
            return summary
        raise DatasetError(f"--dataset {name}={json_file}:{image_root}: the name {name!r} is "
                           f"already registered (to {meta.get('json_file', 'another dataset')!r}). "
                           "Choose another NAME.")
    register_coco_instances(name, {"thing_classes": summary.thing_classes,
                                   "thing_dataset_id_to_contiguous_id": summary.id_map},
                            json_file, image_root)
    return summary


def _where_set(key, config_file, opts):
    """Where `key` is given ('on the command line', 'in <file>'), or None when nowhere."""
    if key in list(opts)[0::2]:
        return "on the command line"
    if config_file:
        from detectron2.config import CfgNode

        node = CfgNode.load_yaml_with_base(config_file, allow_unsafe=True)
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return f"in {config_file} (or its _BASE_)"
    return None


def num_classes_opts(config_file, opts, classes_by_name):
    """The `KEY VALUE` overrides that set NUM_CLASSES from --dataset jsons; [] if none needed.

    Each dataset of `classes_by_name` must be named by DATASETS.TRAIN or DATASETS.TEST;
    they must have the same classes in the same order, and as many as NUM_CLASSES
    when the config file or `opts` set it (MODEL.ROI_HEADS.NUM_CLASSES, or
    MODEL.RETINANET.NUM_CLASSES for RetinaNet).

    Args:
        config_file (str): a YAML config (a LazyConfig .py file is left alone: returns []).
        opts (list[str]): the command line's KEY VALUE overrides.
        classes_by_name (dict): {dataset name: its thing_classes}.
    """
    if not classes_by_name or str(config_file).endswith(".py"):
        return []
    from detectron2.config import get_cfg

    from ..config.checks import merge_config
    from ..config.defaults import add_resnext_config
    from ..engine.checks import num_classes_key

    cfg = add_resnext_config(get_cfg())
    merge_config(cfg, config_file, opts)
    named = dict.fromkeys((*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST))  # in order, each once
    unused = [n for n in classes_by_name if n not in named]
    if unused:  # the run would train and evaluate on the config's datasets instead
        raise DatasetError(f"--dataset {unused[0]!r} is named by neither DATASETS.TRAIN "
                           f"{tuple(cfg.DATASETS.TRAIN)} nor DATASETS.TEST "
                           f"{tuple(cfg.DATASETS.TEST)}: it would not be used. Name it there, "
                           f"e.g. DATASETS.TRAIN \"('{unused[0]}',)\" after the options.")
    used = [n for n in named if n in classes_by_name]
    found = num_classes_key(cfg)
    if not used or found is None:
        return []
    counts = {n: len(classes_by_name[n]) for n in used}
    if len(set(counts.values())) > 1:
        raise DatasetError(f"The --dataset sets that DATASETS.TRAIN / DATASETS.TEST name have "
                           f"different numbers of classes: {counts}. Give them the same "
                           "'categories'.")
    first = list(classes_by_name[used[0]])
    for name in used[1:]:  # same count, other names or order: each class scored as another
        other = list(classes_by_name[name])
        if other != first:
            i = next(i for i, (a, b) in enumerate(zip(first, other)) if a != b)
            raise DatasetError(
                f"--dataset {name!r} and {used[0]!r} order their classes differently: class {i} "
                f"is {other[i]!r} in {name!r} and {first[i]!r} in {used[0]!r} ({other} vs {first}; "
                "classes are the json's categories sorted by id). Give both jsons the same "
                "'categories' (names and ids).")
    key, value = found
    num = counts[used[0]]
    where = _where_set(key, config_file, opts)
    if where is None:
        return [key, str(num)]
    if value != num:
        raise DatasetError(
            f"{key}={value} (set {where}) does not match --dataset {used[0]!r}: its json "
            f"{MetadataCatalog.get(used[0]).get('json_file', '')!r} has {num} categories "
            f"{classes_by_name[used[0]][:20]}. Pass {key} {num}, or leave the "
            "key out of the config to take it from the json.")
    return []


def register_dataset_args(args):
    """Register each `args.dataset` (--dataset NAME=ANNOTATIONS_JSON:IMAGE_DIR).

    Returns `args` when there is none, else a copy whose `opts` end with the NUM_CLASSES
    override taken from the jsons (num_classes_opts), for setup_cfg.
    """
    specs = [parse_dataset_arg(text) for text in getattr(args, "dataset", None) or ()]
    if not specs:
        return args
    names = [spec.name for spec in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DatasetError(f"--dataset names {repeated} more than once; give each dataset its "
                           "own NAME.")
    classes = {spec.name: register_coco_json(*spec).thing_classes for spec in specs}
    extra = num_classes_opts(args.config_file, args.opts, classes)
    if not extra:
        return args
    new = type(args)(**vars(args))
    new.opts = list(args.opts) + extra
    return new
