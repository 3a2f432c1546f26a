"""Exports a PyNET checkpoint for deployment: a SavedModel folder or a TFLite file
(float32, float16 weights, dynamic-range int8 weights, or int8 calibrated on RAW patches).

    python export_model.py level=0 orig=true height=1472 width=1984 format=tflite quant=float16

The exported model takes the packed RAW `raw` [1, height, width, 4] float32 (B, Gb, R, Gr,
values / 1020, as image_io.pack_raw makes them) and returns `rgb`
[1, 2*height / 2**level, 2*width / 2**level, 3] float32 (about [-0.08, 1.08]; clip to [0, 1]).
"""

import glob
import os
import shutil
import sys
import tempfile
import warnings

import numpy as np

import utils
from utils import Key, UserError

FORMATS = ('tflite', 'saved_model')
QUANTS = ('none', 'float16', 'dynamic', 'int8')
INT8_FLOAT = ('norm', 'none')
# The LiteRT ops of instance norm's statistics: mean, variance and 1/sqrt(variance + eps). The quantisation
# debugger ranks them the worst-quantised layers of PyNET by far (error up to 15 quantisation steps where
# the convolutions have 0.3), so quant=int8 keeps them in float32 (int8_float=norm).
NORM_OPS = ('MEAN', 'SQUARED_DIFFERENCE', 'RSQRT')
INPUT_NAME = 'raw'      # signature input key (and graph placeholder name)
OUTPUT_NAME = 'rgb'     # signature output key
SIGNATURE = 'serving_default'

KEYS = {
    'level': Key(0, int, 'PyNET level whose output is exported (0 = full-size photo)', choices=utils.LEVELS),
    'orig': Key(False, bool, 'export the published model models_dir/original/pynet_level_0.ckpt (level=0)'),
    'restore_iter': Key(None, int, 'iteration to export (None: the last saved one of the level)'),
    'models_dir': Key(utils.DEFAULT_MODELS_DIR, str, 'folder with the checkpoints'),
    'height': Key(224, int, 'packed input height = RAW height / 2; a multiple of 16 (a 12 MP photo: 1472)'),
    'width': Key(224, int, 'packed input width = RAW width / 2; a multiple of 16 (a 12 MP photo: 1984)'),
    'format': Key('tflite', str, 'tflite (a .tflite file) or saved_model (a folder)', choices=FORMATS),
    'quant': Key('none', str, 'tflite only: none, float16, dynamic (int8 weights) or int8 (calibrated)',
                 choices=QUANTS),
    'instance_norm_level_1': Key(False, bool, 'set it if the checkpoint was trained with instance norm on level 1'),
    'output': Key('', str, 'where to write (empty: models_dir/export/pynet_level_<L>_<iteration|orig>'
                           '_<height>x<width>[_<quant>][.tflite])'),
    'dataset_dir': Key(utils.DEFAULT_DATASET_DIR, str, 'quant=int8: RAW patches <dataset_dir>/train|test/huawei_raw/'),
    'calibration_size': Key(32, int, 'quant=int8: number of calibration inputs'),
    'seed': Key(0, int, 'quant=int8: seed for picking the calibration patches'),
    'max_scratch_mb': Key(1024, int, 'quant=dynamic|int8: largest im2col scratch buffer one convolution may '
                                     'need; bigger ones are exported as row strips (same output); 0: never split'),
    'int8_float': Key('norm', str, 'quant=int8: what stays float32: norm (the statistics of instance norm: '
                                   'MEAN, SQUARED_DIFFERENCE, RSQRT) or none', choices=INT8_FLOAT),
}
USAGE = 'python export_model.py [level=0] [orig=true | restore_iter=N] [format=tflite|saved_model] [quant=...] [key=value ...]'


# ----------------------------------------------------------------------------------------
# checks before any heavy work

def check_size(height, width):
    """Raises a UserError unless the packed size is positive and divisible by model.SIZE_MULTIPLE."""
    import model
    for name, value in (('height', height), ('width', width)):
        if value <= 0 or value % model.SIZE_MULTIPLE:
            raise UserError('%s=%d: the packed input size must be a positive multiple of %d '
                            '(RAW size / 2; e.g. 224, or 1472x1984 for a 12 MP photo)'
                            % (name, value, model.SIZE_MULTIPLE))


def default_output(config, label):
    """models/export/pynet_level_<L>_<label>_<H>x<W>[_<quant>][.tflite]"""
    name = 'pynet_level_%d_%s_%dx%d' % (config['level'], 'orig' if label == 'orig' else 'iteration_%s' % label,
                                        config['height'], config['width'])
    if config['quant'] != 'none':
        name += '_' + config['quant']
    if config['format'] == 'tflite':
        name += '.tflite'
    return os.path.join(config['models_dir'], 'export', name)


def patch_limit(config):
    """The im2col size above which the export splits a convolution into row strips, or None (no splitting).

    LiteRT's int8 and hybrid (dynamic) convolutions allocate their im2col matrix whole, one byte per value:
    30 GB for level 1's 9x9 blocks at 12 MP. Its float kernels switch to a method without one when it would
    be large, so float exports stay one convolution op each."""
    if config['max_scratch_mb'] < 0:
        raise UserError('max_scratch_mb=%d: give a size in MB (e.g. 1024), or 0 to never split convolutions'
                        % config['max_scratch_mb'])
    if config['quant'] not in ('dynamic', 'int8') or config['max_scratch_mb'] == 0:
        return None
    return config['max_scratch_mb'] * 2 ** 20


def calibration_files(dataset_dir):
    """The RAW patch PNGs int8 calibration may use (training patches first)."""
    files = []
    for part in ('train', 'test'):
        found = glob.glob(os.path.join(dataset_dir, part, 'huawei_raw', '*.png'))
        files += sorted(found, key=lambda p: (len(p), p))
    if not files:
        raise UserError('quant=int8 calibrates on RAW patches but %s has none under train/huawei_raw/ or '
                        'test/huawei_raw/: pass dataset_dir= or use quant=dynamic' % dataset_dir)
    return files


def calibration_inputs(files, height, width, count, seed=0):
    """`count` packed inputs [1, height, width, 4] made of RAW patches: center-cropped, or tiled side by side
    when the export size is larger than a patch (keeps the patches' pixel statistics, unlike resizing)."""
    import image_io
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(files))
    cursor = 0
    for _ in range(count):
        canvas = np.zeros((height, width, 4), np.float32)
        y = 0
        while y < height:
            x, row_height = 0, None
            while x < width:
                packed = image_io.pack_raw(image_io.read_raw_png(files[order[cursor % len(files)]]))
                cursor += 1
                th, tw = min(packed.shape[0], height - y), min(packed.shape[1], width - x)
                top, left = (packed.shape[0] - th) // 2, (packed.shape[1] - tw) // 2
                canvas[y:y + th, x:x + tw] = packed[top:top + th, left:left + tw]
                row_height = th if row_height is None else min(row_height, th)
                x += tw
            y += row_height
        yield canvas[None]


# ----------------------------------------------------------------------------------------
# graph -> SavedModel -> TFLite

def write_saved_model(checkpoint, level, height, width, path, instance_norm_level_1=False, max_patch_values=None):
    """A SavedModel of PyNET's level-`level` output for a [1, height, width, 4] input, with one signature:
    raw -> rgb. The weights are stored as variables (the checkpoint's values); loading prunes to the signature.
    max_patch_values: convolutions with a larger im2col matrix are built as row strips (model.conv2d_same)."""
    import tensorflow.compat.v1 as tf
    import checkpoints
    import devices
    import model
    tf.get_logger().setLevel('ERROR')     # the v1 SavedModel builder announces its deprecation at length
    graph = tf.Graph()
    with graph.as_default():
        raw = tf.placeholder(tf.float32, [1, height, width, 4], name=INPUT_NAME)
        weights = model.PyNETWeights(max_patch_values=max_patch_values)
        outputs = model.PyNET(raw, instance_norm_level_1=instance_norm_level_1, weights=weights)
        rgb = tf.identity(outputs[level], name=OUTPUT_NAME)
        with tf.Session(config=devices.session_config(use_gpu=False)) as sess:
            checkpoints.restore_variables(sess, model.generator_variables(), checkpoint)
            signature = tf.saved_model.signature_def_utils.predict_signature_def({INPUT_NAME: raw},
                                                                                  {OUTPUT_NAME: rgb})
            builder = tf.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(sess, [tf.saved_model.tag_constants.SERVING],
                                                 signature_def_map={SIGNATURE: signature},
                                                 strip_default_attrs=True)
            builder.save()


def tflite_bytes(saved_model_dir, quant, representative=None, int8_float='norm'):
    """Converts the SavedModel; int8 keeps float32 input/output and falls back to float where int8 has no kernel
    (and, with int8_float='norm', keeps instance norm's statistics ops in float32)."""
    import tensorflow as tf2
    converter = tf2.lite.TFLiteConverter.from_saved_model(saved_model_dir)
    if quant != 'none':
        converter.optimizations = [tf2.lite.Optimize.DEFAULT]
    if quant == 'float16':
        converter.target_spec.supported_types = [tf2.float16]
    if quant == 'int8':
        converter.representative_dataset = representative
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')     # calibration announces tf.lite.Interpreter's deprecation
        if quant == 'int8' and int8_float == 'norm':
            # Calibrate, then quantise with an op deny-list: the steps tf.lite.experimental.QuantizationDebugger
            # takes for selective quantisation, without building its instrumented debug model.
            from tensorflow.lite.python import convert
            converter.experimental_mlir_quantizer = True
            converter._experimental_calibrate_only = True
            calibrated = converter.convert()
            return convert.mlir_quantize(calibrated, denylisted_ops=list(NORM_OPS))
        return converter.convert()


def replace_path(tmp, path):
    """Moves the finished tmp file or folder onto path (replacing an older export of the same kind)."""
    if os.path.isdir(tmp) and os.path.exists(path):
        old = path.rstrip('/') + '.old-%d' % os.getpid()
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def export(config):
    """Runs one export as described by `config` (the KEYS values); returns the output path."""
    max_patch = patch_limit(config)
    if config['format'] == 'saved_model' and config['quant'] != 'none':
        raise UserError('quant=%s needs format=tflite: a SavedModel is always exported in float32'
                        % config['quant'])
    if config['orig'] and config['restore_iter'] is not None:
        raise UserError('orig=true and restore_iter= exclude each other: give one of them')
    if config['orig'] and config['level'] != 0:
        raise UserError('orig=true exports the published level-0 model: use level=0 (or a checkpoint of yours)')
    if config['quant'] == 'int8':
        if config['calibration_size'] < 1:
            raise UserError('calibration_size=%d: quant=int8 needs at least 1 calibration input'
                            % config['calibration_size'])
        files = calibration_files(config['dataset_dir'])
    utils.import_tensorflow()
    import checkpoints
    check_size(config['height'], config['width'])
    checkpoint, label = checkpoints.find_checkpoint(config['models_dir'], config['level'],
                                                    config['restore_iter'], config['orig'])
    output = config['output'] or default_output(config, label)
    if config['format'] == 'tflite' and os.path.isdir(output):
        raise UserError('output=%s is a folder; format=tflite writes a file: give a file name' % output)
    if config['format'] == 'saved_model' and os.path.isfile(output):
        raise UserError('output=%s is a file; format=saved_model writes a folder: give another name' % output)
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)

    print('exporting %s (level %d) for packed input %dx%d as %s%s'
          % (checkpoint, config['level'], config['height'], config['width'], config['format'],
             '' if config['quant'] == 'none' else ' (%s)' % config['quant']))
    # Everything is built in a hidden temporary folder next to the output, renamed into place at the end.
    work = tempfile.mkdtemp(prefix='.export-', dir=folder)
    try:
        saved = os.path.join(work, 'saved_model')
        write_saved_model(checkpoint, config['level'], config['height'], config['width'], saved,
                          config['instance_norm_level_1'], max_patch)
        if config['format'] == 'saved_model':
            replace_path(saved, output)
        else:
            representative = None
            if config['quant'] == 'int8':
                def representative():
                    inputs = calibration_inputs(files, config['height'], config['width'],
                                                config['calibration_size'], config['seed'])
                    for sample in utils.progress(inputs, total=config['calibration_size'], desc='calibrating'):
                        yield {INPUT_NAME: sample}
            content = tflite_bytes(saved, config['quant'], representative, config['int8_float'])
            tmp = os.path.join(work, 'model.tflite')
            with open(tmp, 'wb') as f:
                f.write(content)
            replace_path(tmp, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(output)
    return output


# ----------------------------------------------------------------------------------------
# loading an export back (tests, benchmarks, users)

def tflite_interpreter(path, num_threads=None, xnnpack=True):
    """A LiteRT interpreter for `path`: TensorFlow's tf.lite.Interpreter if present, else ai_edge_litert's.

    xnnpack=False runs LiteRT's built-in kernels instead of the XNNPACK delegate: slower, but XNNPACK
    needs about 7 times the activation memory on PyNET (see BENCHMARKS.md), too much for 12 MP inputs.
    """
    import tensorflow as tf2
    num_threads = num_threads or os.cpu_count()
    if hasattr(tf2.lite, 'Interpreter'):
        interpreter_class, resolvers = tf2.lite.Interpreter, tf2.lite.experimental.OpResolverType
    else:
        from ai_edge_litert import interpreter as litert
        interpreter_class, resolvers = litert.Interpreter, litert.OpResolverType
    resolver = resolvers.AUTO if xnnpack else resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')     # tf.lite.Interpreter's deprecation notice, several lines long
        return interpreter_class(model_path=path, num_threads=num_threads, experimental_op_resolver_type=resolver)


def check_allocated(interpreter, path):
    """Raises a UserError when LiteRT could not allocate the model's tensors (it says so only later, vaguely)."""
    interpreter.allocate_tensors()
    details = interpreter.get_input_details()[0]
    try:
        interpreter.set_tensor(details['index'], np.zeros(details['shape'], details['dtype']))
    except ValueError as error:
        if 'unallocated' not in str(error):
            raise
        sizes = [int(np.prod(t['shape'])) * np.dtype(t['dtype']).itemsize for t in interpreter.get_tensor_details()]
        raise UserError('%s: LiteRT cannot allocate this model\'s tensors at input %s (its largest tensor, a '
                        'kernel\'s scratch buffer, needs %.1f GB); export it again with a smaller max_scratch_mb '
                        '(dynamic, int8) or height/width, or export float32 or float16, which need less'
                        % (path, 'x'.join(map(str, details['shape'][1:3])), max(sizes) / 1e9))


def load_exported(path, num_threads=None, xnnpack=True):
    """A function packed float32 [1, H, W, 4] -> rgb float32 for an exported .tflite file or SavedModel folder."""
    if os.path.isdir(path):
        import tensorflow as tf2
        loaded = tf2.saved_model.load(path)
        serve = loaded.signatures[SIGNATURE]

        def run(raw):
            return serve(**{INPUT_NAME: tf2.constant(raw, tf2.float32)})[OUTPUT_NAME].numpy()
        run.loaded = loaded     # the function needs the loaded object alive
        return run
    interpreter = tflite_interpreter(path, num_threads, xnnpack)
    check_allocated(interpreter, path)
    runner = interpreter.get_signature_runner(SIGNATURE)

    def run(raw):
        return runner(**{INPUT_NAME: np.asarray(raw, np.float32)})[OUTPUT_NAME]
    run.interpreter = interpreter
    return run


def main(argv):
    config = utils.parse_args(argv, KEYS, USAGE)
    export(config)


if __name__ == '__main__':
    utils.run_main(main)
