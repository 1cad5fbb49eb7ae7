/* NumPy ufuncs that NumPy lacks, built at run time as a CPython extension (see ufuncs.py).
 *
 * sigmoid: 1 / (1 + exp(-x)). NumPy composes it from several calls (seven on float32, with the
 * clamp that keeps exp from overflowing); a ufunc is one call, which is what matters on small
 * tensors, and one pass over memory on large ones.
 *   float32: computed in double, rounded once (tiny results keep their denormal value:
 *            sigmoid(-100) = 3.78e-44, as the mathematical result; float32 arithmetic gives 0).
 *            -x is capped at 709, where exp would overflow (and NumPy warn); beyond it every
 *            result rounds to 0 in float32 anyway.
 *   float64: exp of a non-positive argument only: 1 / (1 + e) for x >= 0, e / (1 + e) below,
 *            with e = exp(-|x|), so no overflow and full relative precision in both tails.
 * NaN gives NaN, +inf 1 and -inf 0. No floating-point flag is raised but underflow (which
 * NumPy ignores unless asked), as in the NumPy forms these replace.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/ndarraytypes.h>
#include <numpy/ufuncobject.h>
#include <math.h>

static inline float sigmoid_f(float x) {
    double t = -(double)x;
    if (isgreater(t, 709.0)) t = 709.0; /* quiet comparisons: NaN raises no invalid flag */
    return (float)(1.0 / (1.0 + exp(t)));
}

static inline double sigmoid_d(double x) {
    if (isgreaterequal(x, 0.0)) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

static void loop_sigmoid_f32(char **args, const npy_intp *dims, const npy_intp *steps, void *data) {
    (void)data;
    npy_intp n = dims[0], is = steps[0], os = steps[1];
    char *in = args[0], *out = args[1];
    if (is == sizeof(float) && os == sizeof(float)) {
        const float *a = (const float *)in;
        float *o = (float *)out;
        for (npy_intp i = 0; i < n; i++) o[i] = sigmoid_f(a[i]);
        return;
    }
    for (npy_intp i = 0; i < n; i++, in += is, out += os) *(float *)out = sigmoid_f(*(const float *)in);
}

static void loop_sigmoid_f64(char **args, const npy_intp *dims, const npy_intp *steps, void *data) {
    (void)data;
    npy_intp n = dims[0], is = steps[0], os = steps[1];
    char *in = args[0], *out = args[1];
    for (npy_intp i = 0; i < n; i++, in += is, out += os) *(double *)out = sigmoid_d(*(const double *)in);
}

static PyUFuncGenericFunction sigmoid_loops[2] = {loop_sigmoid_f32, loop_sigmoid_f64};
static void *sigmoid_data[2] = {NULL, NULL};
static char sigmoid_types[4] = {NPY_FLOAT, NPY_FLOAT, NPY_DOUBLE, NPY_DOUBLE};

static struct PyModuleDef ember_ufuncs_module = {
    PyModuleDef_HEAD_INIT, "ember_ufuncs", "NumPy ufuncs compiled for ember at run time.", -1, NULL,
};

PyMODINIT_FUNC PyInit_ember_ufuncs(void) {
    import_array();
    import_umath();
    PyObject *m = PyModule_Create(&ember_ufuncs_module);
    if (m == NULL) return NULL;
    PyObject *f = PyUFunc_FromFuncAndData(sigmoid_loops, sigmoid_data, sigmoid_types, 2, 1, 1, PyUFunc_None,
                                          "sigmoid", "1 / (1 + exp(-x)), overflow-free.", 0);
    if (f == NULL || PyModule_AddObject(m, "sigmoid", f) < 0) {
        Py_XDECREF(f);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
