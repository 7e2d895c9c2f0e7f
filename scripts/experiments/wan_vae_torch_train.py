"""Side check for docs/bundled-model.md: diffusers' AutoencoderKLWan with the bundled VAE config,
trained in PyTorch on random shapes over random gradients (64x64 single frames, batch 2,
L1 + L2 + 1e-4 latent penalty, AdamW, clip 1.0, 20 warm-up steps), to see whether the
mean-colour plateau of kiln's stage 1 is the architecture's at this size.
    /opt/kiln-ref/bin/python scripts/experiments/wan_vae_torch_train.py LR STEPS
"""
import torch, json, math, random, time, sys
from diffusers import AutoencoderKLWan
torch.manual_seed(0); random.seed(0)
torch.set_num_threads(1)
cfg=json.load(open(__import__('pathlib').Path(__file__).resolve().parents[2] / 'models/kiln-bundled/vae/config.json'))
for k in list(cfg):
    if k.startswith('_'): del cfg[k]
vae=AutoencoderKLWan(**cfg)
opt=torch.optim.AdamW(vae.parameters(), lr=float(sys.argv[1]) if len(sys.argv)>1 else 1e-3, betas=(0.9,0.99), weight_decay=0.01)
COL=[(1,-.7,-.7),(-.7,1,-.7),(-.7,-.7,1),(1,1,-.7),(1,-.7,1),(-.7,1,1)]
def scene(H=64,W=64):
    y,x=torch.meshgrid(torch.arange(H),torch.arange(W),indexing='ij')
    a=torch.tensor([random.uniform(-1,1) for _ in range(3)]).view(3,1,1); b=torch.tensor([random.uniform(-1,1) for _ in range(3)]).view(3,1,1)
    img=a+(b-a)*(y.float()/H).unsqueeze(0)
    for _ in range(random.randint(1,3)):
        c=torch.tensor(COL[random.randrange(6)]).view(3,1); r=random.uniform(4,12); cx=random.uniform(0,W); cy=random.uniform(0,H)
        if random.random()<.5: m=((x-cx)**2+(y-cy)**2)<r*r
        else: m=((x-cx).abs()<r)&((y-cy).abs()<r)
        img[:,m]=c.expand(3,int(m.sum()))
    return img
t0=time.time()
for step in range(1,int(sys.argv[2]) if len(sys.argv)>2 else 400):
    x=torch.stack([scene() for _ in range(2)]).unsqueeze(2)
    z=vae.encode(x).latent_dist.mean
    r=vae.decode(z).sample
    d=r-x; loss=d.abs().mean()+(d*d).mean()+1e-4*(z*z).mean()
    opt.zero_grad(); loss.backward()
    torch.nn.utils.clip_grad_norm_(vae.parameters(),1.0)
    for g in opt.param_groups: g['lr']=float(sys.argv[1])*min(1,step/20)
    opt.step()
    if step%25==0: print(step, round(loss.item(),4), round(time.time()-t0,1), flush=True)
