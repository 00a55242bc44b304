/* Re-encoding step of the converter: needs lib/quant/dsq_codec.h (not merged yet). */
#include "convert_internal.h"

void dsq__cv_work_free(cv_work *w) {
    dsq_free(w->in);
    dsq_free(w->out);
    w->in = w->out = NULL;
    w->in_cap = w->out_cap = 0;
}

dsq_status dsq__cv_run_reencode(dsq_convert_plan *p, dsq_ctr_writer *w, uint32_t i, cv_work *work, dsq_err *err) {
    return dsq_err_set(err, DSQ_ERR_UNSUPPORTED, "%s: tensor %s: re-encoding to %s is not available yet", p->out,
                       p->outs[i].name, dsq_ctr_encoding_name(p->outs[i].enc));
}
