//! Auto-PGD (Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of
//! diverse parameter-free attacks", ICML 2020), as its reference implementation runs it:
//! initial step 2 eps, momentum 0.75, and checkpoints (first after 22% of the budget, then
//! intervals shrinking by 3% to at least 6%) at which a sample's step size halves and it returns
//! to its best point when fewer than rho = 75% of the recent steps raised its loss, or when its
//! step was not halved last time and its best loss has not improved since.

use tch::{Kind, Tensor};

use super::ball::{broadcast_shape, l2_norms, linf_norms};
use super::probe::{probe, Goal};
use super::run::{Context, Rows};
use super::spec::{AttackSettings, LossKind, Norm};
use super::tracker::{index, Tracker};
use super::AttackError;

const MOMENTUM: f64 = 0.75;
const RHO: f64 = 0.75;

/// The checkpoint schedule for a budget of `n` iterations: (first interval, shrink, minimum).
fn schedule(n: usize) -> (usize, usize, usize) {
    let part = |f: f64| ((f * n as f64) as usize).max(1);
    (part(0.22), part(0.03), part(0.06))
}

/// Per-sample state of one APGD run, on the rows still attacked.
struct State {
    adv: Tensor,
    adv_old: Tensor,
    grad: Tensor,
    best_x: Tensor,
    best_grad: Tensor,
    best_loss: Vec<f32>,
    step_size: Vec<f32>,
    best_loss_at_check: Vec<f32>,
    halved_at_check: Vec<bool>,
    /// Attack loss after each iteration (zeros until reached, as the reference keeps them).
    history: Vec<Vec<f32>>,
}

impl State {
    fn retain(&mut self, index: &Tensor, keep: &[usize]) -> Result<(), tch::TchError> {
        for t in [
            &mut self.adv,
            &mut self.adv_old,
            &mut self.grad,
            &mut self.best_x,
            &mut self.best_grad,
        ] {
            *t = t.f_index_select(0, index)?;
        }
        let pick_f = |v: &Vec<f32>| keep.iter().map(|&j| v[j]).collect::<Vec<_>>();
        self.best_loss = pick_f(&self.best_loss);
        self.step_size = pick_f(&self.step_size);
        self.best_loss_at_check = pick_f(&self.best_loss_at_check);
        self.halved_at_check = keep.iter().map(|&j| self.halved_at_check[j]).collect();
        self.history = keep.iter().map(|&j| self.history[j].clone()).collect();
        Ok(())
    }
}

pub fn run(
    ctx: &Context,
    attack: usize,
    settings: &AttackSettings,
    goal_loss: LossKind,
    targets: Option<&Tensor>,
    restart: u64,
    tracker: &mut Tracker,
) -> Result<(), AttackError> {
    let ball = ctx.ball(settings);
    let n_iter = settings.steps as usize;
    let (first_interval, shrink, min_interval) = schedule(n_iter);
    let Some(mut rows) = Rows::new(ctx, tracker.attackable(), targets)? else {
        return Ok(());
    };

    // Start: a random point on the boundary of the ball.
    let adv = start(ctx, &rows, settings, attack as u64, restart)?;
    let goal = Goal {
        loss: goal_loss,
        targets: rows.targets.as_ref(),
    };
    let first = probe(ctx.model, &adv, &rows.labels, goal, true)?;
    tracker.record(&rows.ids, &adv, &first, attack, 0)?;
    let grad = first.grad.expect("asked for a gradient");
    let b = rows.ids.len();
    let mut state = State {
        adv_old: adv.shallow_clone(),
        best_x: adv.shallow_clone(),
        best_grad: grad.shallow_clone(),
        adv,
        grad,
        best_loss: first.attack_loss.clone(),
        step_size: vec![(2.0 * settings.eps) as f32; b],
        best_loss_at_check: first.attack_loss.clone(),
        halved_at_check: vec![true; b],
        history: vec![vec![0.0; n_iter]; b],
    };
    drop_broken(&mut rows, &mut state, &first.wrong, tracker.stops_early())?;

    let mut interval = first_interval;
    let mut since_check = 0usize;
    for i in 0..n_iter {
        if rows.ids.is_empty() {
            break;
        }
        ctx.check_cancelled()?;

        // Momentum step: a = 1 on the first iteration, 0.75 after.
        let a = if i > 0 { MOMENTUM } else { 1.0 };
        let momentum = state.adv.f_sub(&state.adv_old)?;
        state.adv_old = state.adv.shallow_clone();
        let shape = broadcast_shape(&state.adv);
        let step = Tensor::f_from_slice(&state.step_size)?
            .f_to_device(state.adv.device())?
            .f_reshape(shape)?;
        let z = ball.project(&ball.ascend(&state.adv, &state.grad, &step)?, &rows.clean)?;
        let mixed = state
            .adv
            .f_add(&z.f_sub(&state.adv)?.f_mul_scalar(a)?)?
            .f_add(&momentum.f_mul_scalar(1.0 - a)?)?;
        state.adv = ball.project(&mixed, &rows.clean)?;

        let need_grad = i + 1 < n_iter;
        let goal = Goal {
            loss: goal_loss,
            targets: rows.targets.as_ref(),
        };
        let p = probe(ctx.model, &state.adv, &rows.labels, goal, need_grad)?;
        tracker.record(&rows.ids, &state.adv, &p, attack, (i + 1) as u32)?;
        if let Some(grad) = p.grad {
            state.grad = grad;
        }

        // Best point so far, by the attack's own loss.
        let mut improved = Vec::new();
        for j in 0..rows.ids.len() {
            state.history[j][i] = p.attack_loss[j];
            if p.attack_loss[j] > state.best_loss[j] {
                state.best_loss[j] = p.attack_loss[j];
                improved.push(j as i64);
            }
        }
        if !improved.is_empty() {
            let at = index(&improved, state.adv.device())?;
            state.best_x = state
                .best_x
                .f_index_copy(0, &at, &state.adv.f_index_select(0, &at)?)?;
            if need_grad {
                let g = state.grad.f_index_select(0, &at)?;
                state.best_grad = state.best_grad.f_index_copy(0, &at, &g)?;
            }
        }

        since_check += 1;
        if since_check == interval {
            checkpoint(&mut state, i, interval, n_iter)?;
            interval = interval.saturating_sub(shrink).max(min_interval);
            since_check = 0;
        }
        drop_broken(&mut rows, &mut state, &p.wrong, tracker.stops_early())?;
    }
    Ok(())
}

/// Halves the step and returns to the best point for samples whose loss stalled.
fn checkpoint(
    state: &mut State,
    i: usize,
    interval: usize,
    n_iter: usize,
) -> Result<(), tch::TchError> {
    let mut halve = Vec::new();
    for j in 0..state.history.len() {
        let h = &state.history[j];
        // Index i - c - 1 may be -1: the reference then reads the last entry (still zero).
        let at = |k: isize| h[k.rem_euclid(n_iter as isize) as usize];
        let rises = (0..interval as isize)
            .filter(|&c| at(i as isize - c) > at(i as isize - c - 1))
            .count();
        let oscillates = (rises as f64) <= interval as f64 * RHO;
        let stalled =
            !state.halved_at_check[j] && state.best_loss_at_check[j] >= state.best_loss[j];
        let reduce = oscillates || stalled;
        state.halved_at_check[j] = reduce;
        state.best_loss_at_check[j] = state.best_loss[j];
        if reduce {
            state.step_size[j] /= 2.0;
            halve.push(j as i64);
        }
    }
    if !halve.is_empty() {
        let at = index(&halve, state.adv.device())?;
        state.adv = state
            .adv
            .f_index_copy(0, &at, &state.best_x.f_index_select(0, &at)?)?;
        state.grad = state
            .grad
            .f_index_copy(0, &at, &state.best_grad.f_index_select(0, &at)?)?;
    }
    Ok(())
}

fn drop_broken(
    rows: &mut Rows,
    state: &mut State,
    wrong: &[bool],
    stops_early: bool,
) -> Result<(), tch::TchError> {
    if !stops_early || !wrong.iter().any(|&w| w) {
        return Ok(());
    }
    let keep: Vec<usize> = (0..wrong.len()).filter(|&j| !wrong[j]).collect();
    let index = rows.retain(&keep)?;
    if !keep.is_empty() {
        state.retain(&index, &keep)?;
    }
    Ok(())
}

/// The reference's start: uniform noise scaled so its Linf norm is eps, or a normal direction
/// scaled to L2 norm eps; then clipped to the domain.
fn start(
    ctx: &Context,
    rows: &Rows,
    settings: &AttackSettings,
    attack: u64,
    restart: u64,
) -> Result<Tensor, AttackError> {
    let ball = ctx.ball(settings);
    let noise = ctx.start_noise(&rows.ids, settings.norm, attack, restart)?;
    let shape = rows.clean.size();
    let direction = match settings.norm {
        Norm::Linf => {
            let t = noise
                .f_mul_scalar(2.0)?
                .f_sub_scalar(1.0)?
                .f_reshape(&shape)?;
            let peak = linf_norms(&t)?.f_reshape(broadcast_shape(&t))?;
            t.f_div(&peak)?
        }
        Norm::L2 => {
            let columns = noise.size()[1];
            let t = noise.f_narrow(1, 0, columns - 1)?.f_reshape(&shape)?;
            t.f_div(&l2_norms(&t)?.f_add_scalar(1e-12)?)?
        }
    };
    let adv = rows.clean.f_add(&direction.f_mul_scalar(settings.eps)?)?;
    Ok(ball.clip(&adv)?.f_to_kind(Kind::Float)?)
}
