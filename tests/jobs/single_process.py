"""A plain `python job.py`: no torchrun, no process group, an optimizer and a few steps."""
import torch
import torch.nn as nn

from _jobutil import Expect, finish

STEPS = 5


def main():
    ex = Expect("single_process", 0, 1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(STEPS):
        x = torch.randn(4, 8)
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    ex.fact("steps", STEPS)
    ex.say(f"single_process steps={STEPS} loss={loss.item():.6f}")
    finish(ex, distributed=False)


if __name__ == "__main__":
    main()
