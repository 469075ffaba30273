"""Single-feature AUCs: how well one pixel statistic alone tells a refined set from real images.

    python docs/tools/pixel_features.py ROOT DIR...

ROOT is a run root of an eye demo (the test split of its `real` stage is the reference); each DIR
is a sample stage's folder (its newest committed version, by manifest, is read) or one Parquet
file. For each set it prints,
per statistic, the AUC of that statistic alone against the real test images (0.5 = no help, 1.0 =
separates them by itself) and the two means ± their spread over the images (set / real): intensity mean, std, percentiles,
border step (a frame along the edges), the median absolute Laplacian (fine noise), the
log power in bands of the radially averaged spectrum (cycles per pixel), and the lag-1
autocorrelation of the Laplacian (white vs correlated noise). Needs numpy, pyarrow and Pillow
(the test venv has them: `.venv/bin/python`). Grey 8-bit images only.
"""
import sys, io, os, glob, json, numpy as np, pyarrow.parquet as pq
from PIL import Image


def shard_files(path):
    """The Parquet files of a stage folder's newest committed version (its newest manifest: a
    version without one is unfinished), or `path` itself if it is a Parquet file."""
    if path.endswith('.parquet'):
        return [path]
    manifests = sorted(glob.glob(os.path.join(path, '_manifests', '*.json')))
    if not manifests:
        sys.exit(f'{path}: no committed version (no _manifests/*.json)')
    with open(manifests[-1]) as f:
        m = json.load(f)
    root = os.path.dirname(os.path.normpath(path))
    return [os.path.join(root, s['path']) for s in m['shards']]


def load(path, split=None, n=1500):
    """Up to n grey images of a stage folder or one Parquet file, in [0, 1]."""
    imgs = []
    for f in shard_files(path):
        for r in pq.read_table(f, columns=['image', 'split']).to_pylist():
            if split and r['split'] != split:
                continue
            imgs.append(np.asarray(Image.open(io.BytesIO(r['image']['bytes'])), dtype=np.float32) / 255.)
            if len(imgs) >= n:
                return np.stack(imgs)
    return np.stack(imgs)



def feats(x):
    """Per-image statistics of a stack of images `x` [n, h, w]: name -> array of n values."""
    lap = x[:,1:-1,1:-1]*4 - x[:,:-2,1:-1]-x[:,2:,1:-1]-x[:,1:-1,:-2]-x[:,1:-1,2:]
    F=np.abs(np.fft.fft2(x-x.mean(axis=(1,2),keepdims=True)))**2
    h,w=x.shape[1:]; fy=np.fft.fftfreq(h)[:,None]; fx=np.fft.fftfreq(w)[None,:]; r=np.sqrt(fy**2+fx**2)
    bands=[(0,.05),(.05,.1),(.1,.2),(.2,.3),(.3,.4),(.4,.8)]
    out={'mean':x.mean((1,2)),'std':x.std((1,2)),'p05':np.percentile(x,5,axis=(1,2)),'p95':np.percentile(x,95,axis=(1,2)),
         'min':x.min((1,2)),'max':x.max((1,2)),'lap_mad':np.median(np.abs(lap),axis=(1,2)),'lap_std':lap.std((1,2)),
         'border':np.abs(x[:,0,:]-x[:,1,:]).mean(1)+np.abs(x[:,:,0]-x[:,:,1]).mean(1)}
    for a,b in bands:
        m=(r>=a)&(r<b); out[f'pow{a}-{b}']=np.log10(F[:,m].mean(1)+1e-12)
    # lag-1 autocorrelation of the laplacian (white vs correlated noise)
    l=lap; out['lap_ac1']=((l[:,:,1:]*l[:,:,:-1]).mean((1,2))/(l**2).mean((1,2)))
    return out


def auc(a, b):
    """Mann-Whitney AUC of one statistic between two sets, folded to >= 0.5 (either direction)."""
    s=np.concatenate([a,b]); y=np.r_[np.zeros(len(a)),np.ones(len(b))]
    o=np.argsort(s,kind='mergesort'); rk=np.empty(len(s)); rk[o]=np.arange(1,len(s)+1)
    u=rk[y==1].sum()-len(b)*(len(b)+1)/2; v=u/(len(a)*len(b)); return max(v,1-v)


if len(sys.argv) < 3:
    sys.exit(__doc__)
real = load(os.path.join(sys.argv[1], 'real'), 'test')
fr = feats(real)
for name in sys.argv[2:]:
    fx = feats(load(name))
    print(name)
    for k in fr:
        print(f"  {k:12s} AUC {auc(fr[k], fx[k]):.2f}   mean {fx[k].mean():.3g} ± {fx[k].std():.2g}"
              f" / real {fr[k].mean():.3g} ± {fr[k].std():.2g}")
