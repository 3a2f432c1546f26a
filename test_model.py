"""Renders full-resolution RAW photos with a trained PyNET level.

    python test_model.py level=0 orig=true                  # the published model, the dataset's photos
    python test_model.py level=<L> [restore_iter=N]         # a checkpoint saved by train_model.py
    python test_model.py level=0 orig=true input=photo.dng  # any Zurich RAW PNG or camera RAW file/folder

Writes <output_dir>/<name>_level_<L>_iteration_<I>.png (<name>_level_0_orig.png for orig=true),
values clipped to [0, 1], never rescaled. One session renders all images; a file that cannot be
read is reported on one line and the others are still rendered (exit status 2 at the end).
"""

import os
import sys

import image_io
import utils
from utils import Key, UserError

USAGE = __doc__.split('\n\n')[1]
KEYS = {
    'level': Key(None, int, 'PyNET level to render with (0 = full resolution)', choices=utils.LEVELS,
                 required=True),
    'orig': Key(False, bool, 'use the published model models_dir/original/pynet_level_0.ckpt (level=0 only)'),
    'restore_iter': Key(None, int, 'iteration of the checkpoint to load (default: the last saved for the level)'),
    'use_gpu': Key(True, bool, 'run on the GPU when TensorFlow sees one'),
    'dataset_dir': Key(utils.DEFAULT_DATASET_DIR, str, 'dataset whose full-resolution RAWs are rendered'),
    'models_dir': Key(utils.DEFAULT_MODELS_DIR, str, 'folder holding the checkpoints'),
    'input': Key(None, str, 'a RAW file or folder to render instead of the dataset (PNG, DNG, ...)'),
    'output_dir': Key('results/full-resolution/', str, 'where the photos are written'),
    'bits': Key(8, int, 'bits per channel of the PNGs written', choices=(8, 16)),
    'tile': Key(utils.DEFAULT_TILE, int, 'render in bands of rows of about tile x tile packed pixels (memory); '
                'images up to that size, and tile=0, render in one piece'),
    'precision': Key('float32', str, 'float32, or bfloat16 (faster on CPUs with AMX/AVX512-BF16)',
                     choices=utils.RENDER_PRECISIONS),
    'low_memory': Key(False, bool, 'return each pass\'s memory to the system: a 12 MP photo in bands in '
                      'about 2.6 GB instead of 2.9 GB, taking about 1.3x the time (measured: BENCHMARKS.md)'),
    'instance_norm_level_1': Key(False, bool, 'the model was trained with instance norm on level 1'),
    'black_level': Key(image_io.ZURICH_BLACK_LEVEL, int, 'black level of the training sensor; camera files '
                       'are mapped onto it'),
    'white_level': Key(image_io.ZURICH_WHITE_LEVEL, int, 'white level of the training sensor'),
    'camera_black_level': Key(None, int, "override the black level of camera files' metadata"),
    'camera_white_level': Key(None, int, "override the white level of camera files' metadata"),
}
FULL_RESOLUTION_FOLDERS = ('test/huawei_full_resolution', 'full_resolution')   # under dataset_dir


def dataset_inputs(dataset_dir):
    """The RAW PNGs of the dataset's full-resolution folders (both places the dataset may keep them)."""
    folders = [os.path.join(dataset_dir, f) for f in FULL_RESOLUTION_FOLDERS]
    existing = [f for f in folders if os.path.isdir(f)]
    if not existing:
        raise UserError('no full-resolution folder in %s (looked for %s): extract the dataset there, pass '
                        'dataset_dir=, or render other files with input=' % (dataset_dir, ' and '.join(folders)))
    files = [p for f in existing for p in image_io.raw_files(f, ('.png',))]
    if not files:
        raise UserError('no RAW PNG files in %s: put the full-resolution RAWs there or pass input='
                        % ' or '.join(existing))
    return files


def given_inputs(path):
    """input=: one file (any extension) or the RAW files of a folder."""
    if os.path.isdir(path):
        files = image_io.raw_files(path)
        if not files:
            raise UserError('no RAW files in folder %s (Zurich .png or camera RAW: %s)'
                            % (path, ' '.join(image_io.CAMERA_RAW_EXTENSIONS[:6]) + ' ...'))
        return files
    if not os.path.isfile(path):
        raise UserError('input=%s: no such file or folder' % path)
    return [path]


def output_names(paths):
    """A distinct name per input: its stem, plus its extension where two inputs share a stem, plus a number if still equal."""
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    names = [s if stems.count(s) == 1 else s + '_' + os.path.splitext(p)[1].lstrip('.').lower()
             for s, p in zip(stems, paths)]
    seen = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if names.count(name) == 1 else '%s_%d' % (name, seen[name]))
    return unique


def main(argv):
    config = utils.parse_args(argv, KEYS, USAGE)
    level, orig = config['level'], config['orig']
    if orig and level != 0:
        raise UserError('orig=true loads the published model, which renders at level 0: use level=0')
    image_io.check_levels(config['black_level'], config['white_level'])
    if config['tile'] < 0:
        raise UserError('tile=%d: must be 0 (one piece) or a positive packed size' % config['tile'])
    utils.import_tensorflow(heap_allocator=config['low_memory'])
    import checkpoints
    import render
    checkpoint, label = checkpoints.find_checkpoint(config['models_dir'], level, config['restore_iter'], orig)
    paths = given_inputs(config['input']) if config['input'] else dataset_inputs(config['dataset_dir'])
    suffix = 'orig' if label == 'orig' else 'iteration_%d' % label
    outputs = [os.path.join(config['output_dir'], '%s_level_%d_%s.png' % (name, level, suffix))
               for name in output_names(paths)]

    def read(path, note=None):
        return image_io.read_raw_image(path, config['black_level'], config['white_level'],
                                       config['camera_black_level'], config['camera_white_level'], note)

    # A single file is read before the model loads, so that a bad file fails at once, on one line.
    preloaded = {paths[0]: read(paths[0])} if len(paths) == 1 else {}      # path -> (mosaic, flip)
    try:
        os.makedirs(config['output_dir'], exist_ok=True)
    except OSError as error:
        raise UserError('cannot create output_dir=%s (%s)' % (config['output_dir'], error.strerror or error))
    failed = []
    advice = render.bfloat16_advice()
    if advice and not any(word.startswith('precision=') for word in argv):
        print(advice, file=sys.stderr)
    # A single photo's size is known: the streamed engine is prepared only if it needs it.
    largest = next(((m.shape[0] // 2, m.shape[1] // 2) for m, _ in preloaded.values()), None)
    with render.Renderer(checkpoint, level, use_gpu=config['use_gpu'], precision=config['precision'],
                         tile=config['tile'], instance_norm_level_1=config['instance_norm_level_1'],
                         largest=largest, low_memory=config['low_memory']) as renderer:
        from tensorflow.errors import ResourceExhaustedError
        bar = utils.progress(total=len(paths), desc='rendering', unit='image')
        note = lambda message: bar.write(message, file=sys.stderr)

        def render_one(path, output):
            mosaic, flip = preloaded.pop(path, None) or read(path, note)
            packed = image_io.pack_raw(mosaic)
            del mosaic              # not held while rendering (23 MB of uint16 at 12 MP)
            bar.set_postfix_str(os.path.basename(path))
            try:
                photo = renderer.render(packed)
            except (MemoryError, ResourceExhaustedError):
                lower = ('pass a smaller tile= (now %d)' % config['tile'] if config['tile'] else
                         'render in bands with tile=%d (the default) or smaller' % utils.DEFAULT_TILE)
                raise UserError('out of memory rendering %s: %s' % (path, lower))
            try:
                image_io.save_image(output, image_io.apply_flip(photo, flip), config['bits'])
            except OSError as error:
                raise UserError('cannot write %s (%s)' % (output, error.strerror or error))

        for path, output in zip(paths, outputs):
            try:
                render_one(path, output)
            except UserError as error:
                if len(paths) == 1:
                    raise
                failed.append(path)
                bar.write('error: %s' % error, file=sys.stderr)
            bar.update(1)
        bar.close()
    done = len(paths) - len(failed)
    print('%d of %d photos written to %s' % (done, len(paths), config['output_dir']))
    if failed:
        raise UserError('%d of %d files could not be rendered (see above)' % (len(failed), len(paths)))


if __name__ == '__main__':
    utils.run_main(main)
