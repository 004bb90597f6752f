package gridpersona.sqlguard;

import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.catalyst.parser.ParserInterface;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import scala.Function1;
import scala.runtime.AbstractFunction1;
import scala.runtime.AbstractFunction2;
import scala.runtime.BoxedUnit;

/**
 * {@code spark.sql.extensions=gridpersona.sqlguard.GuardExtension}: adds {@link Guard} as a check rule on
 * every analysed plan. The rule is inert unless the thread is in an analyst scope or the JVM serves SQL
 * ({@link Guard#SERVER_MODE_CONF}); the pipeline's sessions carry it without effect.
 */
public final class GuardExtension extends AbstractFunction1<SparkSessionExtensions, BoxedUnit> {
    @Override
    public BoxedUnit apply(SparkSessionExtensions extensions) {
        extensions.injectCheckRule(new AbstractFunction1<SparkSession, Function1<LogicalPlan, BoxedUnit>>() {
            @Override
            public Function1<LogicalPlan, BoxedUnit> apply(SparkSession session) {
                return new Guard(session);
            }
        });
        // Client session settings are refused before a statement is even parsed (GuardParser).
        extensions.injectParser(new AbstractFunction2<SparkSession, ParserInterface, ParserInterface>() {
            @Override
            public ParserInterface apply(SparkSession session, ParserInterface delegate) {
                return new GuardParser(session, delegate);
            }
        });
        return BoxedUnit.UNIT;
    }
}
