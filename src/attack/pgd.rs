//! FGSM, PGD and the noise baseline (PGD's start without steps): fixed-size steps along the sign (Linf) or direction (L2) of the gradient, each
//! followed by projection onto the ball and clipping to the domain (torchattacks' FGSM, PGD and
//! PGDL2, step for step).

use tch::{Kind, Tensor};

use super::ball::Ball;
use super::probe::{probe, Goal};
use super::run::{Context, Rows};
use super::spec::{AttackSettings, Method};
use super::tracker::Tracker;
use super::AttackError;

/// One run of FGSM or PGD from one start, on the rows the tracker offers.
pub fn run(
    ctx: &Context,
    attack: usize,
    settings: &AttackSettings,
    goal_loss: super::spec::LossKind,
    targets: Option<&Tensor>,
    restart: u64,
    tracker: &mut Tracker,
) -> Result<(), AttackError> {
    let ball = ctx.ball(settings);
    let steps = settings.step_count();
    let step_size = Tensor::from(settings.pgd_step_size() as f32);
    let Some(mut rows) = Rows::new(ctx, tracker.attackable(), targets)? else {
        return Ok(());
    };

    let random_start = settings.method == Method::Pgd && settings.random_start;
    let mut adv = if settings.method == Method::Noise {
        let noise = ctx.start_noise(&rows.ids, settings.norm, attack as u64, restart)?;
        ball.random_surface(&rows.clean, &noise)?
    } else if random_start {
        let noise = ctx.start_noise(&rows.ids, settings.norm, attack as u64, restart)?;
        ball.random_start(&rows.clean, &noise)?
    } else {
        rows.clean.f_detach()?.f_to_kind(Kind::Float)?
    };

    for step in 0..=steps {
        ctx.check_cancelled()?;
        let last = step == steps;
        let goal = Goal {
            loss: goal_loss,
            targets: rows.targets.as_ref(),
        };
        let probe = probe(ctx.model, &adv, &rows.labels, goal, !last)?;
        tracker.record(&rows.ids, &adv, &probe, attack, step)?;
        if last {
            break;
        }
        let mut grad = probe.grad.expect("asked for a gradient");
        if tracker.stops_early() && probe.wrong.iter().any(|&w| w) {
            let keep: Vec<usize> = (0..probe.wrong.len())
                .filter(|&j| !probe.wrong[j])
                .collect();
            if keep.is_empty() {
                break;
            }
            let index = rows.retain(&keep)?;
            adv = adv.f_index_select(0, &index)?;
            grad = grad.f_index_select(0, &index)?;
        }
        adv = step_and_project(&ball, &adv, &grad, &step_size, &rows.clean)?;
    }
    Ok(())
}

fn step_and_project(
    ball: &Ball,
    adv: &Tensor,
    grad: &Tensor,
    step_size: &Tensor,
    clean: &Tensor,
) -> Result<Tensor, tch::TchError> {
    ball.project(&ball.ascend(adv, grad, step_size)?, clean)
}
